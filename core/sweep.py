"""Sweeps: a grid of runs (gamma x depth x seed, ...) trained, resumed, aggregated and drawn.

A sweep is plain data, like a zoology sweep config: an architecture, a task, a profile, a grid
and a list of seeds. In Python::

    from achilles.sweep import run_sweep
    run_sweep("mamba2", "composite", grid={"gamma": [0.5, 0.75, 1.0], "n_layers": [2, 3]}, seeds=3)

and on the command line ``achilles sweep --arch mamba2 --task composite --grid gamma=0.5:1.0:0.25
--grid n_layers=2,3 --seeds 3``.

Grid syntax (``--grid NAME=VALUES``, once per axis):

* ``name=a:b:step``  from a to b inclusive in steps of ``step`` (decimal arithmetic, so
  ``0.5:1.0:0.1`` gives exactly 0.5, 0.6, ..., 1.0; a negative step counts down);
* ``name=v1,v2,...`` a list (JSON values: ``2,3``, ``0.5,1``, ``shuffle,last``);
* ``name=v`` a single value (a fixed setting that also appears in the cells' names).

``name`` is an architecture setting (``gamma``, ``n_layers``, ``d_model``, ...), a task setting
with the prefix ``task.`` (``task.placement``) or a training setting with the prefix ``train.``
(``train.lr_peak``). Seeds are not a grid axis: ``seeds=3`` means seeds 0, 1, 2.

The sweep folder (default ``sweeps/<arch>.<task>-<name or hash>``)::

    sweep.json      the sweep: arch, task, profile, grid, seeds, base settings
    <cell run>/     one ordinary run folder per cell, named like ``achilles train`` names runs
                    (``mamba2.composite-l2-g0.5-s0-quick``, plus ``-<name><value>`` for the
                    other grid axes): every cell loads, evaluates and probes like any run
    results.csv     one row per cell: grid values, seed, status, epochs, run folder and the
                    final metrics of the headline split (and the phase metrics)
    phase_<metric>.png  heatmaps of the phase metrics (mean over seeds); phase.png side by side

The default hash covers what defines a cell's training except the grid's values and the seeds, so
re-running a sweep with more values or seeds reuses every cell already trained. A finished (or
diverged, "failed") cell is skipped; an interrupted one resumes from its checkpoint.

Cells that differ only in seed and gamma share every shape and can train as one ensemble
(``core/ensemble.py``): the default on a GPU; a CPU sweep trains them one by one, which measured
faster there (benchmarks/RESULTS-sweep.md). Executors: ``local`` (a process pool; spawned
workers register the parent's in-process plugins again) and ``ray``.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import inspect
import io
import json
import math
import os
import signal
import socket
import sys
import time
import types
from dataclasses import MISSING, dataclass, field, fields
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Callable, Iterable

from .errors import AchillesError, ConfigError, UnknownNameError
from .runs import CONFIG, RunFolder, atomic_write_json, atomic_write_text

SWEEP_FORMAT = "achilles-sweep/1"
SWEEP_JSON = "sweep.json"
RESULTS_CSV = "results.csv"
LOCK = ".sweep.lock"
EXECUTORS = ("local", "ray")
#: settings that change a model's initialisation but no parameter's shape
SHAPE_FREE = ("gamma",)
#: the largest ensemble trained as one model (--max-ensemble)
DEFAULT_MAX_ENSEMBLE = 16
MAX_GRID_VALUES = 10_000
_NOT_SETTINGS = {"self", "vocab_size", "max_len"}  # the trainer sets these from the task
_DONE = ("finished", "failed")


# -- grid ---------------------------------------------------------------------------------------
def _setting_defaults(factory: Callable) -> tuple[dict[str, Any], bool]:
    """Keyword settings of a factory (class or function) with their defaults; and whether it
    accepts arbitrary ``**kwargs``."""
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return {}, True
    out, open_ended = {}, False
    for name, p in params.items():
        if p.kind is inspect.Parameter.VAR_KEYWORD:
            open_ended = True
        elif p.kind is not inspect.Parameter.VAR_POSITIONAL and name not in _NOT_SETTINGS:
            out[name] = None if p.default is inspect.Parameter.empty else p.default
    return out, open_ended


def known_settings(arch: str, task: str) -> dict[str, Any]:
    """Every name a grid axis may take for ``arch`` on ``task``, with its default (or None)."""
    from .api import _registry
    from .profiles import TrainSettings

    model, _ = _setting_defaults(_registry("architecture").get(arch).factory)
    task_settings, _ = _setting_defaults(_registry("task").get(task).factory)
    train = {f.name: (None if f.default is MISSING else f.default) for f in fields(TrainSettings)
             if f.name != "profile"}
    return {**model, **{f"task.{k}": v for k, v in task_settings.items()},
            **{f"train.{k}": v for k, v in train.items()}}


def _parse_value(text: str) -> Any:
    text = text.strip()
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text  # a bare word such as shuffle


def _decimal(text: str, name: str, what: str) -> Decimal:
    try:
        value = Decimal(text.strip())
    except InvalidOperation:
        raise ConfigError(f"--grid {name}", f"{what} {text.strip()!r} of the range is not a number") from None
    if not value.is_finite():
        raise ConfigError(f"--grid {name}", f"{what} of the range must be finite")
    return value


def parse_range(name: str, text: str) -> list:
    """``a:b[:step]`` inclusive, in decimal arithmetic (so 0.1 steps land on 0.6, not 0.6000000001)."""
    parts = text.split(":")
    if len(parts) not in (2, 3):
        raise ConfigError(f"--grid {name}", f"a range is start:stop:step, got {text!r}")
    start, stop = _decimal(parts[0], name, "start"), _decimal(parts[1], name, "stop")
    step = _decimal(parts[2], name, "step") if len(parts) == 3 else Decimal(1)
    if step == 0:
        raise ConfigError(f"--grid {name}", f"the step of {text!r} is 0")
    count = math.floor((stop - start) / step) + 1
    if count < 1:
        raise ConfigError(f"--grid {name}", f"the range {text!r} is empty (a step of {step} never "
                                            f"gets from {start} to {stop})")
    if count > MAX_GRID_VALUES:
        raise ConfigError(f"--grid {name}", f"the range {text!r} has {count} values (at most {MAX_GRID_VALUES})")
    integral = all(d == d.to_integral_value() and "." not in p and "e" not in p.lower()
                   for d, p in zip((start, stop, step), parts + ["1"] * (3 - len(parts))))
    values = [start + i * step for i in range(count)]
    return [int(v) for v in values] if integral else [float(v) for v in values]


def _coerce(name: str, value: Any, default: Any) -> Any:
    """Match the type of the setting's default: 1 -> 1.0 for gamma, 2.0 -> 2 for n_layers."""
    if isinstance(default, bool) or isinstance(value, bool):
        return value
    if isinstance(default, float) and isinstance(value, int):
        return float(value)
    if isinstance(default, int) and isinstance(value, float):
        if value != int(value):
            raise ConfigError(f"--grid {name}", f"must be a whole number, got {value}")
        return int(value)
    return value


def parse_grid(specs: Iterable[str] | dict[str, Any], arch: str, task: str) -> dict[str, list]:
    """``["gamma=0.5:1.0:0.1", "n_layers=2,3"]`` (or a dict of lists) -> ``{name: [values]}``,
    checked against the settings of ``arch`` and ``task``."""
    from .api import _registry

    if isinstance(specs, dict):
        items = [(k, v if isinstance(v, (list, tuple)) else [v]) for k, v in specs.items()]
    else:
        items = []
        for spec in specs:
            name, sep, text = spec.partition("=")
            name = name.strip()
            if not sep or not name or not text.strip():
                raise ConfigError("--grid", f"expected NAME=VALUES (a:b:step or v1,v2,...), got {spec!r}")
            values = parse_range(name, text) if ":" in text else [_parse_value(v) for v in text.split(",")]
            items.append((name, values))
    known = known_settings(arch, task)
    _, model_open = _setting_defaults(_registry("architecture").get(arch).factory)
    _, task_open = _setting_defaults(_registry("task").get(task).factory)
    grid: dict[str, list] = {}
    for name, values in items:
        if name == "seed" or name == "seeds":
            raise ConfigError("--grid seed", "seeds are not a grid axis; use --seeds N (or --seeds 0,3,7)")
        if name in grid:
            raise ConfigError(f"--grid {name}", "is given twice")
        open_ended = task_open if name.startswith("task.") else (False if name.startswith("train.") else model_open)
        if name not in known and not open_ended:
            raise UnknownNameError(f"grid setting (of {arch} on {task})", name, list(known))
        if not values:
            raise ConfigError(f"--grid {name}", "has no values")
        values = [_coerce(name, v, known.get(name)) for v in values]
        if len({json.dumps(v) for v in values}) != len(values):
            raise ConfigError(f"--grid {name}", f"repeats a value: {values}")
        grid[name] = list(values)
    return grid


def parse_seeds(seeds: int | str | Iterable[int]) -> list[int]:
    """``3`` or ``"3"`` -> [0, 1, 2]; ``"0,3,7"`` or ``[0, 3, 7]`` -> [0, 3, 7]."""
    if isinstance(seeds, str):
        text = seeds.strip()
        try:
            seeds = int(text) if "," not in text else [int(s) for s in text.split(",") if s.strip()]
        except ValueError:
            raise ConfigError("--seeds", f"expected a number of seeds or a list like 0,3,7, got {text!r}") from None
    if isinstance(seeds, int):
        if seeds < 1:
            raise ConfigError("--seeds", f"must be at least 1, got {seeds}")
        return list(range(seeds))
    out = [int(s) for s in seeds]
    if not out or any(s < 0 for s in out) or len(set(out)) != len(out):
        raise ConfigError("--seeds", f"must be distinct non-negative integers, got {out}")
    return out


# -- the sweep ----------------------------------------------------------------------------------
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

    _FIXED = ("arch", "task", "profile", "model_config", "task_config", "settings")

    def identity(self) -> dict:
        """What defines the cells' training, except the grid's values and the seeds."""
        return {**{k: getattr(self, k) for k in self._FIXED}, "grid_axes": sorted(self.grid)}

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.identity(), sort_keys=True).encode()).hexdigest()[:8]

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
        return self.status in _DONE

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
    from .api import _registry
    from .trainer import _factory_default, default_run_name

    task_cls = _registry("task").get(spec.task).factory
    resolved = {**getattr(task_cls, "model_defaults", {}), **model_config}
    for key in ("n_layers", "gamma"):
        if key not in resolved:
            resolved[key] = _factory_default(spec.arch, key, "?")
    name = default_run_name(spec.arch, spec.task, resolved, seed, spec.profile)
    extras = [f"{k.split('.', 1)[-1]}{_fmt_value(v)}" for k, v in values.items() if k not in ("n_layers", "gamma")]
    return "-".join([name, *extras])


def _read_status(path: Path) -> tuple[str, int]:
    run = RunFolder(path)
    if not run.exists():
        return "pending", 0
    config = run.read_config()
    status = config.get("status") or "created"
    epoch = int(config.get("epochs_completed") or 0)
    state = path / "checkpoint" / "state.json"
    if status not in _DONE and state.is_file():
        try:
            epoch = int(json.loads(state.read_text())["epoch"])
        except (json.JSONDecodeError, KeyError, ValueError):
            pass
    return status, epoch


def plan_cells(spec: SweepSpec, folder: str | Path) -> list[Cell]:
    """Every cell of the grid (x seeds), with the status of its run folder."""
    import itertools

    folder = Path(folder)
    axes = list(spec.grid)
    cells = []
    for combo in itertools.product(*(spec.grid[a] for a in axes)):
        values = dict(zip(axes, combo))
        model = dict(spec.model_config)
        task = dict(spec.task_config)
        settings = dict(spec.settings)
        for name, value in values.items():
            if name.startswith("task."):
                task[name[5:]] = value
            elif name.startswith("train."):
                settings[name[6:]] = value
            else:
                model[name] = value
        for seed in spec.seeds:
            path = folder / cell_run_name(spec, model, seed, values)
            status, epoch = _read_status(path)
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
    for k, v in cell.task_config.items():
        if k in config.get("task_config", {}) and config["task_config"][k] != v:
            mismatch.append(f"task.{k} {config['task_config'][k]!r} != {v!r}")
    if config.get("training", {}).get("profile") != spec.profile:
        mismatch.append(f"profile {config.get('training', {}).get('profile')} != {spec.profile}")
    if mismatch:
        raise AchillesError(f"run folder {cell.path} does not belong to this sweep's cell ({'; '.join(mismatch)}); "
                            "move it away or use another sweep folder")


def validate_cells(spec: SweepSpec, cells: list[Cell]) -> None:
    """Build each distinct pending model/task once (seed 0) so a bad setting fails before training."""
    from .profiles import settings_for
    from .trainer import build_task_and_model

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
            task, _, _, _ = build_task_and_model(spec.arch, spec.task, cell.model_config, cell.task_config, 0)
            settings_for(spec.profile, type(task).training_defaults, **cell.settings)
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


def _depth(cell: Cell) -> float:
    depth = cell.model_config.get("n_layers", 1)
    return float(depth) if isinstance(depth, (int, float)) else 1.0


# -- workers ------------------------------------------------------------------------------------
def _forwardable_plugins() -> list[tuple[str, str, str | None]]:
    """In-process plugins (``register_plugin(module)``) a fresh worker must register again:
    (module name, plugin name, folder to put on sys.path)."""
    from .plugin_manager import get_state

    state = get_state()
    out = []
    for name, info in state.plugins.items():
        if info.distribution != "(in-process)":
            continue
        plugin = state.pm.get_plugin(name)
        if isinstance(plugin, types.ModuleType):
            file = getattr(plugin, "__file__", None)
            out.append((plugin.__name__, name, str(Path(file).resolve().parent) if file else None))
    return out


def worker_env(threads: int, device: str, method: str, gpus: float = 0.0) -> dict:
    return {"threads": threads, "device": device, "method": method, "gpus": gpus, "plugins": _forwardable_plugins(),
            "env": {k: os.environ[k] for k in ("ACHILLES_PLUGINS", "MPLBACKEND") if k in os.environ}}


_prepared: dict | None = None


def _prepare_worker(env: dict, ignore_sigint: bool = False) -> None:
    """Once per worker process: threads, environment, the in-process plugins of the parent."""
    global _prepared
    import importlib

    import torch

    if ignore_sigint:  # the parent stops workers with SIGTERM, which the trainer turns into a clean stop
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(max(1, int(env["threads"])))
    if _prepared == env:
        return
    os.environ.update(env.get("env", {}))
    os.environ.setdefault("MPLBACKEND", "Agg")
    from .plugin_manager import get_state, register_plugin

    state = get_state()
    for module_name, plugin_name, folder in env.get("plugins", []):
        if plugin_name in state.plugins:
            continue
        if folder and folder not in sys.path:
            sys.path.insert(0, folder)
        register_plugin(importlib.import_module(module_name), plugin_name)
    _prepared = env


def _cell_payload(spec: SweepSpec, cell: Cell) -> dict:
    return {"arch": spec.arch, "task": spec.task, "profile": spec.profile, "seed": cell.seed,
            "model_config": cell.model_config, "task_config": cell.task_config, "settings": cell.settings,
            "path": str(Path(cell.path).resolve()),
            # a folder killed before its first checkpoint restarts (resume_run could not reseed its init)
            "resume": cell.status != "pending" and (Path(cell.path) / "checkpoint" / "state.json").is_file()}


def train_unit(cells: list[dict], env: dict) -> list[dict]:
    """Train one unit (in whatever process runs it); one result dict per cell. Never raises for a
    cell's failure: it comes back as status "failed" (diverged) or "error" (with the message)."""
    _prepare_worker(env)
    with contextlib.redirect_stdout(io.StringIO()):  # epoch lines are in each run's metrics.jsonl
        return _train_unit(cells, env)


def _train_unit(cells: list[dict], env: dict) -> list[dict]:
    from .trainer import RunResult, TrainingDiverged, finalize_run, resume_run, start_run

    logs: list[str] = []
    log = logs.append
    started = time.perf_counter()
    results: list[dict] = []
    trainers = []
    try:
        for c in cells:
            if c["resume"]:
                trainers.append(resume_run(c["path"], device=env["device"], log=log, progress=False))
            else:
                trainers.append(start_run(c["arch"], c["task"], profile=c["profile"], seed=c["seed"],
                                          device=env["device"], out=c["path"], model_config=c["model_config"],
                                          task_config=c["task_config"], overwrite=True, log=log,
                                          progress=False, **c["settings"]))
        if len(trainers) == 1:
            try:
                runs = [trainers[0].fit()]
            except TrainingDiverged as exc:
                log(f"{trainers[0].run.path}: {exc}")
                runs = [RunResult(trainers[0].run.path, "failed", epochs_completed=trainers[0].epoch)]
            method = "single"
        else:
            from .ensemble import EnsembleTrainer

            ensemble = EnsembleTrainer(trainers, method=env["method"], log=log, progress=False)
            runs = ensemble.fit()
            method = ensemble.method_used
        for run in runs:
            try:
                finalize_run(run)
            except Exception as exc:  # figures and cards must not lose a trained cell
                log(f"{run.path}: could not write figures/card ({type(exc).__name__}: {exc})")
            results.append({"path": str(run.path), "status": run.status, "epochs": run.epochs_completed})
    except Exception as exc:
        message = f"{type(exc).__name__}: {exc}"
        done = {r["path"] for r in results}
        results += [{"path": c["path"], "status": "error", "error": message} for c in cells if c["path"] not in done]
        method = "error"
    seconds = time.perf_counter() - started
    for r in results:
        r.update(seconds=seconds, method=method, unit_size=len(cells), log=logs)
    return results


# -- executors ----------------------------------------------------------------------------------
def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def default_ensemble(device: str = "auto", executor: str = "local") -> bool:
    """Ensembles on a GPU, one-by-one on a CPU: the faster path as measured
    (benchmarks/RESULTS-sweep.md: on a 2-core CPU, ensembling gained at most 11% for the
    Transformer and cost 13-41% for mamba2). A Ray sweep ensembles when this machine has a GPU."""
    from .trainer import resolve_device

    try:
        return resolve_device(device).type == "cuda"
    except AchillesError:
        return False


def default_workers(device: str = "cpu") -> int:
    """On a CPU, one single-threaded worker per core: the papers' small models parallelise badly
    over intra-op threads (benchmarks/RESULTS-sweep.md: 2 processes x 1 thread train a 2-core
    sweep 2-3x faster than 1 process x 2 threads). On a GPU, one worker drives the device."""
    if device != "cpu":
        from .trainer import resolve_device

        if resolve_device(device).type == "cuda":
            return 1
    return max(1, cpu_count())


class _Interrupted(Exception):
    pass


class SweepInterrupted(KeyboardInterrupt):
    """Ctrl-C (or SIGTERM) during a sweep, raised after the finished cells were aggregated;
    ``result`` holds what was written. Run the sweep again to resume it."""

    def __init__(self, result: "SweepResult"):
        super().__init__(f"sweep {result.path} interrupted")
        self.result = result


def _raise_interrupt(*_):
    raise KeyboardInterrupt


def _sigterm_as_interrupt():
    """A ``kill`` of the sweep driver stops it like Ctrl-C: workers keep their checkpoints."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, _raise_interrupt)


def _execute_serial(payloads, env, on_done) -> None:
    import torch

    threads = torch.get_num_threads()
    try:
        for payload in payloads:
            on_done(payload, train_unit(payload, env))
    finally:
        torch.set_num_threads(threads)


def _execute_local(payloads, env, workers, on_done) -> None:
    import multiprocessing as mp
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    # spawn: a fresh interpreter per worker (forking a process that already runs torch threads is unsafe)
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn"),
                               initializer=_prepare_worker, initargs=(env, True))
    futures = {pool.submit(train_unit, p, env): p for p in payloads}
    pending = set(futures)
    try:
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                try:
                    results = fut.result()
                except BrokenProcessPool as exc:
                    results = [{"path": c["path"], "status": "error", "error": f"worker died ({exc})"}
                               for c in futures[fut]]
                on_done(futures[fut], results)
    except KeyboardInterrupt:
        for fut in pending:
            fut.cancel()
        # A clean stop: each training worker finishes its step, marks its runs interrupted, returns.
        for proc in list(getattr(pool, "_processes", {}).values()):
            try:
                os.kill(proc.pid, signal.SIGTERM)
            except (ProcessLookupError, OSError):
                pass
        wait([f for f in pending if not f.cancelled()], timeout=60)
        pool.shutdown(wait=False, cancel_futures=True)
        raise _Interrupted() from None
    pool.shutdown(wait=True)


def require_ray():
    """The ray module, or a one-line error saying how to install it."""
    try:
        import ray
    except ImportError:
        raise AchillesError('the ray executor needs Ray: pip install "achilles[ray]"') from None
    return ray


def _execute_ray(payloads, env, address, on_done) -> None:
    ray = require_ray()
    started_here = False
    if not ray.is_initialized():
        address = address or os.environ.get("RAY_ADDRESS")
        kwargs = dict(include_dashboard=False, log_to_driver=False,
                      runtime_env={"env_vars": dict(env.get("env", {}))})
        ray.init(address=address, **kwargs) if address else ray.init(**kwargs)
        started_here = True
    # Ray hides GPUs from tasks that reserve none: ask for a share of one with gpus_per_unit.
    remote = ray.remote(num_cpus=env["threads"], num_gpus=env.get("gpus", 0.0), max_retries=0)(train_unit)
    refs = {remote.remote(p, env): p for p in payloads}
    pending = list(refs)
    try:
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            for ref in ready:
                try:
                    results = ray.get(ref)
                except Exception as exc:  # the task's worker died (OOM, node lost)
                    results = [{"path": c["path"], "status": "error", "error": f"ray task failed ({exc})"}
                               for c in refs[ref]]
                on_done(refs[ref], results)
    except KeyboardInterrupt:
        for ref in pending:
            ray.cancel(ref)  # KeyboardInterrupt inside the task: the trainer keeps its checkpoint
        try:
            ray.wait(pending, num_returns=len(pending), timeout=60)
        except Exception:
            pass
        raise _Interrupted() from None
    finally:
        if started_here:
            ray.shutdown()


# -- results ------------------------------------------------------------------------------------
def phase_metrics(spec: SweepSpec, rows: list[dict] | None = None) -> list[str]:
    """The ``split.metric`` columns the phase diagram draws: the task's ``phase_metrics`` if it
    declares them; composite-style ``acc_43_composite`` and ``acc_43_symmetric`` on test when the
    results have them (figure 4 of the paper); else the headline metric."""
    from .api import _registry

    task_cls = _registry("task").get(spec.task).factory
    head = f"{getattr(task_cls, 'headline_split', 'test')}.{getattr(task_cls, 'headline_metric', 'acc')}"
    declared = getattr(task_cls, "phase_metrics", None)
    if declared:
        return [m if "." in m else f"{getattr(task_cls, 'headline_split', 'test')}.{m}" for m in declared]
    columns = set().union(*(r.keys() for r in rows)) if rows else set()
    fig4 = ["test.acc_43_composite", "test.acc_43_symmetric"]
    if all(c in columns for c in fig4):
        return fig4
    return [head]


def collect_results(spec: SweepSpec, cells: list[Cell], folder: str | Path) -> list[dict]:
    """One row per cell from its run folder (status, epochs, final metrics)."""
    from .api import _registry

    task_cls = _registry("task").get(spec.task).factory
    head_split = getattr(task_cls, "headline_split", "test")
    folder = Path(folder)
    rows = []
    for cell in cells:
        status, epoch = _read_status(cell.path)
        row: dict[str, Any] = {**cell.values, "seed": cell.seed, "status": status, "epochs": epoch,
                               "run": os.path.relpath(cell.path, folder)}
        if status != "pending":
            final = RunFolder(cell.path).read_config().get("final_metrics") or {}
            for split, metrics in final.items():
                if split == head_split or split == "test":
                    for name, value in metrics.items():
                        row[f"{split}.{name}"] = value
        rows.append(row)
    return rows


def write_csv(rows: list[dict], path: str | Path) -> None:
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, restval="", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (json.dumps(v) if isinstance(v, (list, dict)) else v) for k, v in row.items()})
    atomic_write_text(path, buf.getvalue())


def read_csv(path: str | Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def mean_table(spec: SweepSpec, rows: list[dict], metrics: list[str]) -> tuple[list[list], list[str]]:
    """Rows of (grid values..., seeds finished, mean of each metric) for the terminal."""
    axes = list(spec.grid)
    groups: dict[str, list[dict]] = {}
    for row in rows:
        groups.setdefault(json.dumps([row.get(a) for a in axes]), []).append(row)
    out = []
    for key, members in groups.items():
        finished = [r for r in members if r["status"] == "finished"]
        means = []
        for m in metrics:
            vals = [float(r[m]) for r in finished if r.get(m) not in (None, "")]
            means.append(sum(vals) / len(vals) if vals else None)
        statuses = sorted({r["status"] for r in members} - {"finished"})
        shown = [f"{v:g}" if isinstance(v, float) else v for v in json.loads(key)]
        out.append(shown + [f"{len(finished)}/{len(members)}" + (f" ({', '.join(statuses)})" if statuses else "")] + means)
    return out, axes + ["finished"] + [f"mean {m}" for m in metrics]


def aggregate(folder: str | Path, spec: SweepSpec | None = None, cells: list[Cell] | None = None,
              metrics: list[str] | None = None, draw: bool = True) -> tuple[list[dict], list[str], list[str]]:
    """Write results.csv (and the phase heatmaps) of a sweep folder; return (rows, metrics, figures)."""
    folder = Path(folder)
    spec = spec or SweepSpec.load(folder)
    cells = cells if cells is not None else plan_cells(spec, folder)
    rows = collect_results(spec, cells, folder)
    write_csv(rows, folder / RESULTS_CSV)
    metrics = [m if "." in m else f"{_headline_split(spec)}.{m}" for m in metrics] if metrics else phase_metrics(spec, rows)
    figures = []
    if draw and any(r["status"] == "finished" for r in rows):
        from .phase import draw_phase

        figures = draw_phase(spec, rows, metrics, folder)
    return rows, metrics, figures


def _headline_split(spec: SweepSpec) -> str:
    from .api import _registry

    return getattr(_registry("task").get(spec.task).factory, "headline_split", "test")


# -- the lock -----------------------------------------------------------------------------------
class SweepLock:
    """One driver per sweep folder: a second ``achilles sweep`` on it fails instead of racing."""

    def __init__(self, folder: Path):
        self.file = folder / LOCK
        self.held = False

    def __enter__(self) -> "SweepLock":
        me = {"pid": os.getpid(), "host": socket.gethostname()}
        for _ in range(2):
            try:
                fd = os.open(self.file, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                try:
                    other = json.loads(self.file.read_text())
                except (OSError, json.JSONDecodeError):
                    other = {}
                if other.get("host") == me["host"] and not _pid_alive(other.get("pid")):
                    self.file.unlink(missing_ok=True)  # stale: its driver is gone
                    continue
                raise AchillesError(f"sweep {self.file.parent} is being run by process {other.get('pid')} on "
                                    f"{other.get('host')}; wait for it (or delete {self.file} if it is gone)")
            with os.fdopen(fd, "w") as f:
                json.dump(me, f)
            self.held = True
            return self
        raise AchillesError(f"could not lock {self.file}")

    def __exit__(self, *exc) -> None:
        if self.held:
            self.file.unlink(missing_ok=True)


def _pid_alive(pid: Any) -> bool:
    try:
        os.kill(int(pid), 0)
    except (ProcessLookupError, ValueError, TypeError):
        return False
    except PermissionError:
        return True
    return True


# -- the entry point ----------------------------------------------------------------------------
@dataclass
class SweepResult:
    path: Path
    spec: SweepSpec
    rows: list[dict]
    metrics: list[str]
    figures: list[str]
    trained: int = 0
    skipped: int = 0
    errors: list[str] = field(default_factory=list)
    interrupted: bool = False  # then run_sweep raises SweepInterrupted carrying this result
    seconds: float = 0.0


def sweep_folder(spec: SweepSpec, name: str | None = None, sweeps_dir: str | Path = "sweeps") -> Path:
    return Path(sweeps_dir) / f"{spec.arch}.{spec.task}-{name or spec.digest()}"


def prepare_folder(spec: SweepSpec, folder: Path) -> None:
    """Create the sweep folder, or check that an existing one holds the same sweep."""
    file = folder / SWEEP_JSON
    if file.is_file():
        old = SweepSpec.load(folder)
        for key in SweepSpec._FIXED:
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


def make_spec(arch: str, task: str, grid: Iterable[str] | dict[str, Any], seeds: int | str | Iterable[int] = 1,
              profile: str | None = None, device: str = "auto", model_config: dict | None = None,
              task_config: dict | None = None, **settings: Any) -> SweepSpec:
    """A checked SweepSpec (arch and task must be registered; ``profile`` defaults as for train)."""
    from .api import _registry
    from .trainer import default_profile, resolve_device

    _registry("architecture").get(arch)  # unknown names fail here with close matches
    _registry("task").get(task)
    profile = profile or default_profile(resolve_device(device))
    settings = {k: v for k, v in settings.items() if v is not None}
    return SweepSpec(arch, task, profile, parse_grid(grid, arch, task), parse_seeds(seeds),
                     dict(model_config or {}), dict(task_config or {}), settings)


def run_sweep(arch: str | None = None, task: str | None = None, grid: Iterable[str] | dict | None = None,
              seeds: int | str | Iterable[int] = 1, profile: str | None = None, *,
              spec: SweepSpec | None = None, folder: str | Path | None = None, name: str | None = None,
              sweeps_dir: str | Path = "sweeps", executor: str = "local", workers: int | None = None,
              threads: int | None = None, address: str | None = None, ensemble: bool | None = None,
              max_ensemble: int = DEFAULT_MAX_ENSEMBLE, ensemble_method: str = "auto", device: str = "auto",
              gpus_per_unit: float = 0.0,
              model_config: dict | None = None, task_config: dict | None = None, metrics: list[str] | None = None,
              draw: bool = True, progress: bool | None = None, log: Callable[[str], None] = print,
              **settings: Any) -> SweepResult:
    """Train every cell of a sweep not yet done, then write results.csv and the phase heatmaps.

    ``executor``: ``local`` (a process pool of ``workers``; ``workers=0`` trains in this process)
    or ``ray`` (``address`` or ``RAY_ADDRESS``, else a local Ray instance; each Ray task reserves
    ``threads`` CPUs and ``gpus_per_unit`` GPUs). ``threads``: torch threads per worker (default:
    the cores divided among the workers; 1 per Ray task). ``ensemble``: train cells that differ
    only in seed and gamma as one ensemble; default ``default_ensemble(device)``.
    """
    from tqdm.auto import tqdm

    started = time.perf_counter()
    if executor not in EXECUTORS:
        raise ConfigError("--executor", f"{executor!r} is not one of {', '.join(EXECUTORS)}")
    if executor == "ray":
        require_ray()
    if spec is None:
        if not arch or not task:
            raise AchillesError("a sweep needs an architecture and a task (or a sweep folder to resume)")
        spec = make_spec(arch, task, grid or [], seeds, profile, device, model_config, task_config, **settings)
    folder = Path(folder) if folder else sweep_folder(spec, name, sweeps_dir)
    if workers is not None and workers < 0:
        raise ConfigError("--workers", "must be 0 (train in this process) or more")
    if max_ensemble < 1:
        raise ConfigError("--max-ensemble", "must be at least 1")
    if ensemble is None:
        ensemble = default_ensemble(device, executor)
    folder.mkdir(parents=True, exist_ok=True)
    with SweepLock(folder):
        prepare_folder(spec, folder)
        cells = plan_cells(spec, folder)
        validate_cells(spec, cells)
        if executor == "ray":
            workers_n = workers or 0
            threads_n = threads or 1
            slots = workers_n or max(1, cpu_count() // threads_n)
        else:
            workers_n = default_workers(device) if workers is None else workers
            threads_n = threads or max(1, cpu_count() // max(1, workers_n))
            slots = max(1, workers_n)
        units = make_units(cells, ensemble, max_ensemble, slots)
        todo = sum(len(u.cells) for u in units)
        result = SweepResult(folder, spec, [], [], [], skipped=len(cells) - todo)
        if todo:
            where = (f"ray ({address or os.environ.get('RAY_ADDRESS') or 'local instance'})" if executor == "ray"
                     else "this process" if workers_n == 0 else f"{workers_n} local worker(s)")
            resuming = sum(c.status != "pending" for u in units for c in u.cells)
            log(f"Sweep {folder}: {len(cells)} cells, {result.skipped} done, {todo} to train"
                + (f" ({resuming} resume from a checkpoint)" if resuming else "")
                + f" in {len(units)} unit(s) (largest {max(len(u.cells) for u in units)}) on {where}, "
                f"{threads_n} thread(s) each")
        env = worker_env(threads_n, device, ensemble_method, gpus_per_unit)
        payloads = [[_cell_payload(spec, c) for c in u.cells] for u in units]
        bar = tqdm(total=todo, unit="cell", dynamic_ncols=True, file=sys.stderr, desc="sweep",
                   disable=(not progress) if progress is not None else None)

        def on_done(payload, results):
            for r in results:
                result.trained += r["status"] == "finished"
                if r.get("error"):
                    result.errors.append(f"{r['path']}: {r['error']}")
                    bar.write(f"error: {r['path']}: {r['error']}")
                for line in r.get("log", []) if r["status"] != "finished" else []:
                    bar.write(line)
            seconds = results[0].get("seconds", 0.0) if results else 0.0
            bar.set_postfix_str(f"last unit: {len(results)} cell(s) in {seconds:.0f}s ({results[0].get('method') if results else ''})")
            bar.update(len(results))

        previous = _sigterm_as_interrupt()
        try:
            if not payloads:
                pass
            elif executor == "ray":
                _execute_ray(payloads, env, address, on_done)
            elif workers_n == 0:
                _execute_serial(payloads, env, on_done)
            else:
                _execute_local(payloads, env, workers_n, on_done)
        except (_Interrupted, KeyboardInterrupt):
            result.interrupted = True
        finally:
            bar.close()
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
        result.rows, result.metrics, result.figures = aggregate(folder, spec, cells, metrics, draw)
    result.seconds = time.perf_counter() - started
    if result.interrupted:
        raise SweepInterrupted(result)
    return result
