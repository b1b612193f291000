"""What runs inside a sweep's worker: prepare the process (threads, environment, the parent's
in-process plugins), then train one unit of cells and report each cell's outcome."""

from __future__ import annotations

import importlib
import os
import signal
import sys
import time
import types
from pathlib import Path

from achilles.training.threads import WAIT_POLICY_VARS, apply_threads
from achilles.training.ensemble import EnsembleTrainer
from achilles.logs import captured_logs
from achilles.contract.loader import IN_PROCESS, get_state, register_plugin
from achilles.training.trainer import CHECKPOINT_STATE, finalize_run, resume_run, start_run
from achilles.sweep.plan import Cell
from achilles.sweep.sweep_spec import SweepSpec


def forwardable_plugins() -> list[tuple[str, str, str | None]]:
    """In-process plugins (``register_plugin(module)``) a fresh worker must register again:
    (module name, plugin name, folder to put on sys.path)."""
    state = get_state()
    out = []
    for name, info in state.plugins.items():
        if info.distribution != IN_PROCESS:
            continue
        plugin = state.pm.get_plugin(name)
        if isinstance(plugin, types.ModuleType):
            file = getattr(plugin, "__file__", None)
            out.append((plugin.__name__, name, str(Path(file).resolve().parent) if file else None))
    return out


def worker_env(threads: int, device: str, method: str, gpus: float = 0.0) -> dict:
    """Everything a worker needs besides its cells (plain data: it crosses process boundaries)."""
    return {"threads": threads, "device": device, "method": method, "gpus": gpus, "plugins": forwardable_plugins(),
            "env": {k: os.environ[k] for k in ("ACHILLES_PLUGINS", "MPLBACKEND", *WAIT_POLICY_VARS)
                    if k in os.environ}}


_prepared: dict | None = None


def prepare_worker(env: dict, ignore_sigint: bool = False) -> None:
    """Once per worker process: threads, environment, the in-process plugins of the parent."""
    global _prepared
    if ignore_sigint:  # the parent stops workers with SIGTERM, which the trainer turns into a clean stop
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, _interrupt)  # outside training too: stop, never start the next cell
    apply_threads(max(1, int(env["threads"])))
    if _prepared == env:
        return
    os.environ.update(env.get("env", {}))
    os.environ.setdefault("MPLBACKEND", "Agg")
    state = get_state()
    for module_name, plugin_name, folder in env.get("plugins", []):
        if plugin_name in state.plugins:
            continue
        if folder and folder not in sys.path:
            sys.path.insert(0, folder)
        register_plugin(importlib.import_module(module_name), plugin_name)
    _prepared = env


def cell_payload(spec: SweepSpec, cell: Cell) -> dict:
    """One cell as plain data for a worker."""
    return {"arch": spec.arch, "task": spec.task, "profile": spec.profile, "seed": cell.seed,
            "model_config": cell.model_config, "task_config": cell.task_config, "settings": cell.settings,
            "path": str(Path(cell.path).resolve()),
            # a folder killed before its first checkpoint restarts (resume_run could not reseed its init)
            "resume": cell.status != "pending" and (Path(cell.path) / CHECKPOINT_STATE).is_file()}


def _interrupt(*_) -> None:
    raise KeyboardInterrupt


def statuses_on_disk(cells: list[dict]) -> list[dict]:
    """The results of a unit stopped before it could report them: each cell's status as its run
    folder records it (finished or failed if it got there, else interrupted: a re-run resumes it)."""
    from achilles.errors import AchillesError
    from achilles.runs.folder import RunFolder

    results = []
    for cell in cells:
        try:
            status = RunFolder(cell["path"]).read_config().get("status")
        except (AchillesError, OSError):
            status = None
        results.append({"path": cell["path"], "status": status if status in ("finished", "failed") else "interrupted"})
    return results


def unit_error(cells: list[dict], message: str) -> list[dict]:
    """The results of cells that could not train (status "error": a re-run retries them)."""
    return [{"path": c["path"], "status": "error", "error": message} for c in cells]


def train_unit(cells: list[dict], env: dict) -> list[dict]:
    """Train one unit (in whatever process runs it); one result dict per cell. Never raises for a
    cell's failure: it comes back as status "failed" (non-finite) or "error" (with the message).
    The cells' log lines come back with the results instead of being shown."""
    prepare_worker(env)
    with captured_logs() as lines:
        results, method = _train_unit(cells, env)
    for r in results:
        r.update(method=method, unit_size=len(cells), log=lines)
    return results


def _train_unit(cells: list[dict], env: dict) -> tuple[list[dict], str]:
    started = time.perf_counter()
    results: list[dict] = []
    try:
        trainers = [resume_run(c["path"], device=env["device"], progress=False) if c["resume"] else
                    start_run(c["arch"], c["task"], profile=c["profile"], seed=c["seed"], device=env["device"],
                              out=c["path"], model_config=c["model_config"], task_config=c["task_config"],
                              overwrite=True, progress=False, **c["settings"])
                    for c in cells]
        if len(trainers) == 1:
            runs, method = [trainers[0].fit()], "single"
        else:
            ensemble = EnsembleTrainer(trainers, method=env["method"], progress=False)
            runs, method = ensemble.fit(), ensemble.method_used
        for run in runs:
            finalize_run(run.path)
            results.append({"path": str(run.path), "status": run.status, "epochs": run.epochs_completed,
                            **({"reason": run.reason} if run.reason else {})})
    except Exception as exc:
        message = f"{type(exc).__name__}: {exc}"
        done = {r["path"] for r in results}
        results += unit_error([c for c in cells if c["path"] not in done], message)
        method = "error"
    seconds = time.perf_counter() - started
    for r in results:
        r["seconds"] = seconds
    return results, method
