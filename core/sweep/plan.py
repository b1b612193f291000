"""The plan of a sweep: its cells (grid values x seeds, each an ordinary run folder with a status)
and the units they train in (one cell, or an ensemble of cells that share every shape)."""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from achilles.contract.lookup import get_task, registry
from achilles.errors import AchillesError
from achilles.runs.folder import recorded_data_seed
from achilles.training.profiles import settings_for
from achilles.runs.folder import RunFolder, failed_while_saving
from achilles.contract.settings import factory_settings
from achilles.training.trainer import CHECKPOINT_STATE, build_task_and_model
from achilles.runs.folder import default_run_name
from achilles.sweep.sweep_spec import SweepSpec

#: settings that change a model's initialisation but no parameter's shape
SHAPE_FREE = ("gamma",)
#: the largest ensemble trained as one model (--max-ensemble)
DEFAULT_MAX_ENSEMBLE = 16
#: statuses of a cell that is not trained again
DONE = ("finished", "failed")


@dataclass
class Cell:
    values: dict[str, Any]   # this cell's grid values
    seed: int
    model_config: dict
    task_config: dict
    settings: dict
    path: Path
    status: str = "pending"  # pending (no folder yet), created, running, interrupted, finished, failed
    epoch: int = 0           # epochs completed (where a resume starts)

    @property
    def done(self) -> bool:
        return self.status in DONE

    def group_key(self) -> str:
        """Cells with equal keys can train as one ensemble."""
        model = {k: v for k, v in self.model_config.items() if k not in SHAPE_FREE}
        return json.dumps([model, self.task_config, self.settings, self.epoch], sort_keys=True, default=str)


def _fmt_value(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return "".join(c if c.isalnum() or c in "._+" else "_" for c in text)


def cell_run_name(spec: SweepSpec, model_config: dict, seed: int, values: dict) -> str:
    """The cell's run folder name: ``achilles train``'s default name, plus ``-<name><value>``
    for grid axes other than depth and gamma (``-d_model64``, ``-placementshuffle``)."""
    task_cls = registry("task").get(spec.task).factory
    arch_settings = factory_settings(registry("architecture").get(spec.arch).factory)
    resolved = {**getattr(task_cls, "model_defaults", {}), **model_config}
    for key in ("n_layers", "gamma"):
        if key not in resolved:
            resolved[key] = arch_settings.default(key, "?")
    name = default_run_name(spec.arch, spec.task, resolved, seed, spec.profile)
    extras = [f"{k.split('.', 1)[-1]}{_fmt_value(v)}" for k, v in values.items() if k not in ("n_layers", "gamma")]
    return "-".join([name, *extras])


def read_status(path: Path) -> tuple[str, int]:
    """(status, epochs completed) of a cell's run folder; ``pending`` when there is none yet."""
    run = RunFolder(path)
    if not run.exists():
        return "pending", 0
    config = run.read_config()
    status = config.get("status") or "created"
    if failed_while_saving(config):  # a full disk, not the training: resumed from its checkpoint
        status = "interrupted"
    epoch = int(config.get("epochs_completed") or 0)
    state = path / CHECKPOINT_STATE
    if status not in DONE and state.is_file():
        try:
            epoch = int(json.loads(state.read_text())["epoch"])
        except (json.JSONDecodeError, KeyError, ValueError):
            pass
    return status, epoch


def plan_cells(spec: SweepSpec, folder: str | Path) -> list[Cell]:
    """Every cell of the grid (x seeds), with the status of its run folder."""
    folder = Path(folder)
    axes = list(spec.grid)
    cells = []
    for combo in itertools.product(*(spec.grid[a] for a in axes)):
        values = dict(zip(axes, combo))
        model, task, settings = dict(spec.model_config), dict(spec.task_config), dict(spec.settings)
        for name, value in values.items():
            if name.startswith("task."):
                task[name[5:]] = value
            elif name.startswith("train."):
                settings[name[6:]] = value
            else:
                model[name] = value
        for seed in spec.seeds:
            path = folder / cell_run_name(spec, model, seed, values)
            status, epoch = read_status(path)
            cell = Cell(values, seed, model, task, settings, path, status, epoch)
            if status != "pending":
                _check_cell_folder(spec, cell)
            cells.append(cell)
    return cells


def _check_cell_folder(spec: SweepSpec, cell: Cell) -> None:
    config = RunFolder(cell.path).read_config()
    mismatch = []
    if config.get("arch") != spec.arch or config.get("task") != spec.task:
        mismatch.append(f"it is {config.get('arch')} on {config.get('task')}")
    if config.get("seed") != cell.seed:
        mismatch.append(f"seed {config.get('seed')} != {cell.seed}")
    for k, v in cell.model_config.items():
        if k in config.get("model", {}) and config["model"][k] != v:
            mismatch.append(f"{k} {config['model'][k]!r} != {v!r}")
    recorded = config.get("task_config", {})
    given = cell.task_config
    if any(k in recorded and recorded[k] != v for k, v in given.items()):
        given = {**given, **_as_the_task_records(spec.task, given)}  # "K1V1,K1V2" is recorded as a list
    for k, v in given.items():
        if k in recorded and recorded[k] != v:
            mismatch.append(f"task.{k} {recorded[k]!r} != {v!r}")
    if config.get("training", {}).get("profile") != spec.profile:
        mismatch.append(f"profile {config.get('training', {}).get('profile')} != {spec.profile}")
    recorded_seed, wanted_seed = recorded_data_seed(config), cell_data_seed(cell)
    if recorded_seed != wanted_seed:  # runs from before per-seed data all record data seed 0
        mismatch.append(f"data seed {recorded_seed} != {wanted_seed}")
    if mismatch:
        raise AchillesError(f"run folder {cell.path} does not belong to this sweep's cell ({'; '.join(mismatch)}); "
                            "move it away or use another sweep folder")


def cell_data_seed(cell: Cell) -> int:
    """The data seed a cell trains with: a pinned ``data_seed`` setting, else the cell's seed (as
    ``TrainSettings.resolved`` derives it), so a run.json recording that resolved value belongs to
    a spec whose data_seed is unset."""
    pinned = cell.settings.get("data_seed")
    return cell.seed if pinned is None else int(pinned)


def _as_the_task_records(task: str, task_config: dict) -> dict:
    """``task_config`` as the task normalises it into a run record (parsed lists, defaults); the
    settings as given when the task refuses them (the mismatch message then shows them)."""
    try:
        return {k: v for k, v in get_task(task, **task_config).config.items() if k in task_config}
    except AchillesError:
        return {}


def validate_cells(spec: SweepSpec, cells: list[Cell]) -> None:
    """Build each distinct pending model/task once (seed 0) so a bad setting, or one that cannot fit
    in memory, fails before training."""
    seen = set()
    for cell in cells:
        if cell.status != "pending":
            continue
        key = json.dumps([cell.model_config, cell.task_config, cell.settings], sort_keys=True, default=str)
        if key in seen:
            continue
        seen.add(key)
        where = ", ".join(f"{k}={v}" for k, v in cell.values.items())
        try:
            task_class = registry("task").get(spec.task).factory
            settings = settings_for(spec.profile, getattr(task_class, "training_defaults", {}), **cell.settings)
            build_task_and_model(spec.arch, spec.task, cell.model_config, cell.task_config, 0, fits=settings)
        except AchillesError as exc:
            raise AchillesError(f"the cell {where or '(no grid)'} cannot be built: {exc}") from None


# -- units of work ------------------------------------------------------------------------------
@dataclass
class Unit:
    """Cells trained together by one worker: one cell, or an ensemble of cells."""

    cells: list[Cell]


def make_units(cells: list[Cell], ensemble: bool = True, max_members: int = DEFAULT_MAX_ENSEMBLE,
               slots: int = 1) -> list[Unit]:
    """Group the cells still to train. With ``ensemble``, cells of equal ``group_key`` form one
    unit of at most ``max_members`` cells; groups are split further while there are fewer units
    than ``slots`` (parallel workers), so no worker sits idle."""
    todo = [c for c in cells if not c.done]
    if not ensemble or max_members <= 1:
        return [Unit([c]) for c in todo]
    groups: dict[str, list[Cell]] = {}
    for cell in todo:
        groups.setdefault(cell.group_key(), []).append(cell)
    units = []
    for members in groups.values():
        for i in range(0, len(members), max_members):
            units.append(members[i: i + max_members])
    while len(units) < slots:
        biggest = max(units, key=len, default=None)
        if biggest is None or len(biggest) < 2:
            break
        units.remove(biggest)
        half = (len(biggest) + 1) // 2
        units += [biggest[:half], biggest[half:]]
    # longest first (cells x depth as the cost), so the last unit to start is a short one
    return [Unit(u) for u in sorted(units, key=lambda u: -len(u) * _depth(u[0]))]


def unit_cost(unit: Unit) -> float:
    """A unit's relative training cost, to start the costliest first: cells x layers x width x
    samples x epochs (settings a cell does not override count at a common default)."""
    cell = unit.cells[0]
    width = cell.model_config.get("d_model", 64)
    samples = cell.settings.get("train_samples") or 80_000
    epochs = cell.settings.get("epochs") or 6
    numbers = [v if isinstance(v, (int, float)) else 1 for v in (width, samples, epochs)]
    return len(unit.cells) * _depth(cell) * numbers[0] * numbers[1] * numbers[2]


def _depth(cell: Cell) -> float:
    depth = cell.model_config.get("n_layers", 1)
    return float(depth) if isinstance(depth, (int, float)) else 1.0
