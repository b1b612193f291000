"""Sweeps: a grid of runs (gamma x depth x seed, ...) trained, resumed, aggregated and drawn.

A sweep is plain data, a ``SweepSpec`` (like a zoology sweep config: an architecture, a task, a
profile, a grid and a list of seeds); how it runs is a ``SweepOptions``. In Python::

    from achilles.sweep import SweepOptions, make_spec, run_sweep
    spec = make_spec("mamba2", "composite", {"gamma": [0.5, 0.75, 1.0], "n_layers": [2, 3]}, seeds=3)
    result = run_sweep(spec, SweepOptions(workers=2))

and on the command line ``achilles sweep --arch mamba2 --task composite --grid gamma=0.5:1.0:0.25
--grid n_layers=2,3 --seeds 3``. Grid syntax: ``grid.py``.

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
failed: non-finite) cell is skipped; an interrupted one resumes from its checkpoint.

Cells that differ only in seed and gamma share every shape and can train as one ensemble
(``achilles.training.ensemble``): the default on a GPU; a CPU sweep trains them one by one, which measured
faster there (benchmarks/RESULTS-sweep.md). Executors: ``local`` (a process pool; spawned
workers register the parent's in-process plugins again) and ``ray``.

The parts: ``grid.py`` (syntax), ``sweep_spec.py`` (``SweepSpec``, sweep.json), ``plan.py`` (cells,
units), ``worker.py`` and ``executors.py`` (where units train), ``results_table.py`` (results.csv,
mean table), ``driver_lock.py`` (one driver per folder), ``phase.py`` (the heatmaps) and
``driver.py`` (``run_sweep``, which drives the rest).

May import: ``achilles.errors``, ``achilles.logs``, ``achilles.contract``, ``achilles.runs``,
``achilles.models``, ``achilles.zoo`` and ``achilles.training``.
"""

from achilles.sweep.executors import EXECUTORS, cpu_count, default_ensemble, default_workers, require_ray
from achilles.sweep.grid import MAX_GRID_VALUES, known_settings, parse_grid, parse_range, parse_seeds
from achilles.sweep.driver_lock import LOCK, SweepBusyError, SweepLock
from achilles.sweep.plan import DEFAULT_MAX_ENSEMBLE, SHAPE_FREE, Cell, Unit, cell_run_name, make_units, plan_cells, validate_cells
from achilles.sweep.results_table import RESULTS_CSV, aggregate, collect_results, mean_table, phase_metrics, read_csv, write_csv
from achilles.sweep.driver import SweepInterrupted, SweepOptions, SweepResult, run_sweep, run_sweeps
from achilles.sweep.sweep_spec import SWEEP_FORMAT, SWEEP_JSON, SweepSpec, make_spec, prepare_folder, sweep_folder
from achilles.sweep.worker import train_unit, worker_env

__all__ = [
    "DEFAULT_MAX_ENSEMBLE", "EXECUTORS", "LOCK", "MAX_GRID_VALUES", "RESULTS_CSV", "SHAPE_FREE", "SWEEP_FORMAT",
    "SWEEP_JSON", "Cell", "SweepBusyError", "SweepInterrupted", "SweepLock", "SweepOptions", "SweepResult",
    "SweepSpec", "Unit", "aggregate", "cell_run_name", "collect_results", "cpu_count", "default_ensemble",
    "default_workers", "known_settings", "make_spec", "make_units", "mean_table", "parse_grid", "parse_range",
    "parse_seeds", "phase_metrics", "plan_cells", "prepare_folder", "read_csv", "require_ray", "run_sweep", "run_sweeps",
    "sweep_folder", "train_unit", "validate_cells", "worker_env", "write_csv",
]
