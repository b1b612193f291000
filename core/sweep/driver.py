"""``run_sweep``: train every cell of a sweep not yet done, then aggregate it."""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from tqdm.auto import tqdm

from achilles.training.threads import requested_threads
from achilles.training.ensemble import METHODS
from achilles.errors import ConfigError
from achilles.sweep.executors import (EXECUTORS, Interrupted, cpu_count, default_ensemble, default_workers, execute_local,
                        execute_ray, execute_serial, require_ray, sigterm_as_interrupt)
from achilles.sweep.driver_lock import SweepLock
from achilles.sweep.plan import DEFAULT_MAX_ENSEMBLE, make_units, plan_cells, unit_cost, validate_cells
from achilles.sweep.results_table import aggregate
from achilles.runs.ownership import owned_folder
from achilles.sweep.sweep_spec import SweepSpec, check_sweep_folder, prepare_folder, sweep_folder
from achilles.sweep.worker import cell_payload, worker_env

log = logging.getLogger("achilles.sweep")


@dataclass(frozen=True)
class SweepOptions:
    """How a sweep runs (not what it trains: that is the SweepSpec).

    ``folder``: the sweep folder (None: ``sweeps/<arch>.<task>-<digest>``). ``executor``: ``local``
    (a process pool of ``workers``; ``workers=0`` trains in this process) or ``ray`` (``address``
    or ``RAY_ADDRESS``, else a local Ray instance; each Ray task reserves ``threads`` CPUs and
    ``gpus_per_unit`` GPUs). ``threads``: torch threads per worker (default: ``ACHILLES_THREADS``,
    else the usable CPUs divided among the workers; 1 per Ray task). ``ensemble``: train cells that differ only in seed and
    gamma as one ensemble of at most ``max_ensemble`` (default: on a GPU yes, on a CPU no);
    ``ensemble_method``: auto, vmap or loop. ``metrics``: the phase-diagram metrics (default: the
    task's). ``draw``: write the heatmaps. ``progress``: a bar over cells (None: in a terminal)."""

    folder: Path | None = None
    executor: str = "local"
    workers: int | None = None
    threads: int | None = None
    address: str | None = None
    ensemble: bool | None = None
    max_ensemble: int = DEFAULT_MAX_ENSEMBLE
    ensemble_method: str = "auto"
    device: str = "auto"
    gpus_per_unit: float = 0.0
    metrics: Sequence[str] | None = None
    draw: bool = True
    progress: bool | None = None

    def __post_init__(self) -> None:
        if self.folder is not None and not isinstance(self.folder, Path):
            object.__setattr__(self, "folder", Path(self.folder))  # a str is fine too
        checks = [("--executor", self.executor in EXECUTORS, f"{self.executor!r} is not one of {', '.join(EXECUTORS)}"),
                  ("--workers", self.workers is None or self.workers >= 0, "must be 0 (train in this process) or more"),
                  ("--threads", self.threads is None or self.threads >= 1, "must be at least 1"),
                  ("--address", self.address is None or self.executor == "ray", "is for --executor ray"),
                  ("--max-ensemble", self.max_ensemble >= 1, "must be at least 1"),
                  ("--ensemble-method", self.ensemble_method in METHODS,
                   f"{self.ensemble_method!r} is not one of {', '.join(METHODS)}"),
                  ("--ray-gpus", self.gpus_per_unit >= 0, "must be 0 or more")]
        for setting, ok, why in checks:
            if not ok:
                raise ConfigError(setting, why)

    def use_ensemble(self) -> bool:
        return default_ensemble(self.device, self.executor) if self.ensemble is None else self.ensemble

    def parallelism(self) -> tuple[int, int, int]:
        """(workers, threads per worker, parallel slots): workers 0 means this process."""
        if self.executor == "ray":
            threads = self.threads or requested_threads() or 1
            return self.workers or 0, threads, self.workers or max(1, cpu_count() // threads)
        workers = default_workers(self.device) if self.workers is None else self.workers
        threads = self.threads or requested_threads() or max(1, cpu_count() // max(1, workers))
        return workers, threads, max(1, workers)


@dataclass
class SweepResult:
    path: Path
    spec: SweepSpec
    rows: list[dict]
    metrics: list[str]
    figures: list[str]
    trained: int = 0   # cells that finished in this call
    failed: int = 0    # cells that ended failed (non-finite) in this call
    skipped: int = 0   # cells already done before it
    errors: list[str] = field(default_factory=list)
    interrupted: bool = False  # then run_sweep raises SweepInterrupted carrying this result
    seconds: float = 0.0


class SweepInterrupted(KeyboardInterrupt):
    """Ctrl-C (or SIGTERM) during a sweep, raised after the finished cells were aggregated;
    ``result`` holds what was written. Run the sweep again to resume it."""

    def __init__(self, result: SweepResult):
        super().__init__(f"sweep {result.path} interrupted")
        self.result = result


def run_sweep(spec: SweepSpec, options: SweepOptions = SweepOptions()) -> SweepResult:
    """Train every cell of ``spec`` not yet done (finished or failed), then write results.csv and
    the phase heatmaps. Raises SweepInterrupted (with the result) when stopped."""
    return run_sweeps([(spec, options.folder)], options)[0]


def run_sweeps(sweeps: Sequence[tuple[SweepSpec, Path | None]], options: SweepOptions = SweepOptions()
               ) -> list[SweepResult]:
    """Several sweeps (spec, folder) trained by one pool of workers, as ``run_sweep`` trains one:
    their cells share the workers, costliest first, so no core idles while a small sweep waits
    for a large one (a recipe's run groups). Each folder is locked, planned and aggregated on its
    own. Raises SweepInterrupted, carrying the first sweep's result, when stopped."""
    started = time.perf_counter()
    if options.executor == "ray":
        require_ray()
    workers, threads, slots = options.parallelism()
    jobs = []
    targets = [(spec, Path(folder) if folder else sweep_folder(spec)) for spec, folder in sweeps]
    for _, folder in targets:  # never among a user's files: new, empty or a sweep folder of its own
        check_sweep_folder(folder)
    new = {folder for _, folder in targets if not folder.exists()}
    for spec, folder in targets:  # a new sweep: every setting checked before its folder is created
        if folder in new:
            validate_cells(spec, plan_cells(spec, folder))
    seen: dict[Path, set] = {}  # folder -> cell paths planned so far (two specs may share a folder)
    with ExitStack() as locks:
        for spec, folder in targets:
            folder.mkdir(parents=True, exist_ok=True)
            if folder not in seen:
                locks.enter_context(SweepLock(folder))
                seen[folder] = set()
            prepare_folder(spec, folder)
            cells = plan_cells(spec, folder)
            for cell in cells:  # a cell's run folder is the sweep's own: never a link out of it
                owned_folder(folder, cell.path.name, create=False)
            if folder not in new:
                validate_cells(spec, cells)
            fresh = [c for c in cells if c.path not in seen[folder]]  # a cell two specs share trains once
            seen[folder].update(c.path for c in cells)
            units = make_units(fresh, options.use_ensemble(), options.max_ensemble, slots)
            result = SweepResult(folder, spec, [], [], [], skipped=len(cells) - sum(len(u.cells) for u in units))
            if units:
                _say_plan(options, folder, cells, units, workers, threads)
            jobs.append((spec, folder, cells, units, result))
        env = worker_env(threads, options.device, options.ensemble_method, options.gpus_per_unit)
        queue = sorted(((unit_cost(u), i, [cell_payload(spec, c) for c in u.cells])
                        for i, (spec, _, _, units, _) in enumerate(jobs) for u in units),
                       key=lambda item: -item[0])
        owner = {id(payload): jobs[i][4] for _, i, payload in queue}
        payloads = [payload for _, _, payload in queue]
        todo = sum(len(p) for p in payloads)
        bar = tqdm(total=todo, unit="cell", dynamic_ncols=True, file=sys.stderr, desc="sweep",
                   disable=(not options.progress) if options.progress is not None else None)

        def on_done(payload: list, results: list[dict]) -> None:
            _count(owner[id(payload)], results)
            seconds = results[0].get("seconds", 0.0) if results else 0.0
            bar.set_postfix_str(f"last unit: {len(results)} cell(s) in {seconds:.0f}s "
                                f"({results[0].get('method') if results else ''})")
            bar.update(len(results))

        interrupted = False
        previous = sigterm_as_interrupt()
        try:
            if not payloads:
                pass
            elif options.executor == "ray":
                execute_ray(payloads, env, options.address, on_done)
            elif workers == 0:
                execute_serial(payloads, env, on_done)
            else:
                execute_local(payloads, env, workers, on_done)
        except (Interrupted, KeyboardInterrupt):
            interrupted = True
        finally:
            bar.close()
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
        metrics = list(options.metrics) if options.metrics else None
        for spec, folder, _, _, result in jobs:  # each folder's table holds every cell planned in it
            every = {c.path: c for s, f, cells, _, _ in jobs if f == folder for c in cells}
            result.rows, result.metrics, result.figures = aggregate(folder, spec, list(every.values()), metrics,
                                                                    options.draw)
            result.interrupted = interrupted
            result.seconds = time.perf_counter() - started
    results = [job[4] for job in jobs]
    if interrupted:
        raise SweepInterrupted(results[0])
    return results


def _say_plan(options: SweepOptions, folder: Path, cells: list, units: list, workers: int, threads: int) -> None:
    todo = sum(len(u.cells) for u in units)
    where = (f"ray ({options.address or os.environ.get('RAY_ADDRESS') or 'local instance'})"
             if options.executor == "ray" else "this process" if workers == 0 else f"{workers} local worker(s)")
    resuming = sum(c.status != "pending" for u in units for c in u.cells)
    log.info(f"Sweep {folder}: {len(cells)} cells, {len(cells) - todo} done, {todo} to train"
             + (f" ({resuming} resume from a checkpoint)" if resuming else "")
             + f" in {len(units)} unit(s) (largest {max(len(u.cells) for u in units)}) on {where}, "
             f"{threads} thread(s) each")


def _count(result: SweepResult, results: list[dict]) -> None:
    """Add one unit's outcomes to ``result``; show the unit's lines when a cell did not finish."""
    for r in results:
        result.trained += r["status"] == "finished"
        result.failed += r["status"] == "failed"
        if r.get("reason") and r.get("unit_size", 1) == 1:  # an ensemble's loop already said it
            log.warning(f"{r['path']}: {r['reason']}")
        if r.get("error"):
            result.errors.append(f"{r['path']}: {r['error']}")
            log.error(f"{r['path']}: {r['error']}")
    if any(r["status"] != "finished" for r in results):
        for line in results[0].get("log", []):
            log.info(line)
