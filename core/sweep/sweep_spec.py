"""A sweep as plain data (like a zoology sweep config): an architecture, a task, a profile, a grid,
seeds and the base settings every cell shares; stored as ``sweep.json`` in the sweep folder."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

from achilles.contract.lookup import registry
from achilles.errors import AchillesError, ConfigError
from achilles.runs.files import atomic_write_json
from achilles.training.trainer import default_profile, resolve_device
from achilles.sweep.grid import parse_grid, parse_seeds, training_settings

SWEEP_FORMAT = "achilles-sweep/1"
SWEEP_JSON = "sweep.json"
DEFAULT_SWEEPS_DIR = "sweeps"


@dataclass
class SweepSpec:
    arch: str
    task: str
    profile: str
    grid: dict[str, list]
    seeds: list[int]
    model_config: dict = field(default_factory=dict)  # base settings every cell shares
    task_config: dict = field(default_factory=dict)
    settings: dict = field(default_factory=dict)      # training overrides (epochs, lr_peak, ...)

    #: what a sweep folder must agree on with a re-run of it (the grid's values and seeds may grow)
    FIXED = ("arch", "task", "profile", "model_config", "task_config", "settings")

    def identity(self) -> dict:
        """What defines the cells' training, except the grid's values and the seeds. ``data_seed``
        (None: each cell's seed draws its own data) is always part of it, so sweeps from before
        per-seed data, whose cells all trained on data seed 0, get folders of their own."""
        return {**{k: getattr(self, k) for k in self.FIXED}, "grid_axes": sorted(self.grid),
                "data_seed": self.settings.get("data_seed")}

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.identity(), sort_keys=True).encode()).hexdigest()[:8]

    def headline_split(self) -> str:
        return getattr(registry("task").get(self.task).factory, "headline_split", "test")

    def to_dict(self) -> dict:
        return {"format": SWEEP_FORMAT, "arch": self.arch, "task": self.task, "profile": self.profile,
                "grid": self.grid, "seeds": self.seeds, "model_config": self.model_config,
                "task_config": self.task_config, "settings": self.settings}

    @classmethod
    def from_dict(cls, d: dict) -> "SweepSpec":
        if d.get("format") != SWEEP_FORMAT:
            raise AchillesError(f"not an achilles sweep file (format {SWEEP_FORMAT!r} expected)")
        return cls(d["arch"], d["task"], d["profile"], {k: list(v) for k, v in d["grid"].items()},
                   list(d["seeds"]), dict(d.get("model_config", {})), dict(d.get("task_config", {})),
                   dict(d.get("settings", {})))

    @classmethod
    def load(cls, folder: str | Path) -> "SweepSpec":
        file = Path(folder) / SWEEP_JSON
        if not file.is_file():
            raise AchillesError(f"{folder} is not a sweep folder (no {SWEEP_JSON})")
        try:
            return cls.from_dict(json.loads(file.read_text()))
        except (json.JSONDecodeError, KeyError) as exc:
            raise AchillesError(f"{file} is not a readable sweep file ({exc})") from None


def make_spec(arch: str, task: str, grid: Iterable[str] | dict[str, Any], seeds: int | str | Iterable[int] = 1,
              profile: str | None = None, device: str = "auto", model_config: dict | None = None,
              task_config: dict | None = None, **train_overrides: Any) -> SweepSpec:
    """A checked SweepSpec (arch and task must be registered; ``profile`` defaults as for train;
    ``train_overrides`` are training settings such as ``epochs`` or ``lr_peak``; None is ignored)."""
    registry("architecture").get(arch)  # unknown names fail here with close matches
    registry("task").get(task)
    profile = profile or default_profile(resolve_device(device))
    overrides = {k: v for k, v in train_overrides.items() if v is not None}
    accepted = training_settings()
    for name in overrides:
        if name not in accepted:
            raise ConfigError(name, f"is not a training setting (settings: {', '.join(accepted)})")
    return SweepSpec(arch, task, profile, parse_grid(grid, arch, task), parse_seeds(seeds),
                     dict(model_config or {}), dict(task_config or {}), overrides)


def sweep_folder(spec: SweepSpec, name: str | None = None, sweeps_dir: str | Path = DEFAULT_SWEEPS_DIR) -> Path:
    """The default folder of a sweep: ``<sweeps_dir>/<arch>.<task>-<name or digest>``."""
    return Path(sweeps_dir) / f"{spec.arch}.{spec.task}-{name or spec.digest()}"


def check_sweep_folder(folder: Path, option: str = "--out") -> None:
    """A sweep writes only into a new or empty folder or one of its own (recognised by its sweep.json,
    or holding nothing but run folders, its cells): never among a user's files. Checked before
    anything is created or written."""
    import os

    from achilles.sweep.driver_lock import LOCK

    folder = Path(folder)
    if not os.path.lexists(folder):
        return
    if not folder.is_dir():
        raise AchillesError(f"{option} {folder} exists and is not a folder; choose another {option}")
    file = folder / SWEEP_JSON
    if file.is_file() and not file.is_symlink():
        return
    from achilles.runs.folder import is_run_folder

    entries = sorted(p.name for p in folder.iterdir() if p.name not in (LOCK, SWEEP_JSON)
                     and (p.is_symlink() or not is_run_folder(p)))  # a sweep's cells without its sweep.json yet
    if entries or file.is_symlink():
        shown = ", ".join((entries or [SWEEP_JSON])[:4]) + (", ..." if len(entries) > 4 else "")
        raise AchillesError(f"{option} {folder} is not a sweep folder (no {SWEEP_JSON}; it holds {shown}); a sweep "
                            f"writes only into a new or empty folder or one of its own: choose another {option}")


def prepare_folder(spec: SweepSpec, folder: Path) -> None:
    """Create the sweep folder's sweep.json, or check that an existing one holds the same sweep."""
    file = folder / SWEEP_JSON
    if file.is_file():
        old = SweepSpec.load(folder)
        for key in SweepSpec.FIXED:
            if getattr(old, key) != getattr(spec, key):
                raise AchillesError(f"sweep folder {folder} holds a sweep with another {key} "
                                    f"({getattr(old, key)!r}, not {getattr(spec, key)!r}); choose another --name")
        if sorted(old.grid) != sorted(spec.grid):
            raise AchillesError(f"sweep folder {folder} sweeps {', '.join(old.grid) or 'nothing'}, not "
                                f"{', '.join(spec.grid) or 'nothing'}; choose another --name")
        created = json.loads(file.read_text()).get("created")
    else:
        created = _now()
    atomic_write_json(file, {**spec.to_dict(), "created": created, "updated": _now()})


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
