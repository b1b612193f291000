"""The one place recipes meet the sweep machinery and the probe interface."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from .. import sweep
from .spec import Plan, RunGroup

if TYPE_CHECKING:  # pragma: no cover
    from .runner import ReproduceOptions


def spec_for(group: RunGroup, plan: Plan, device: str = "auto") -> "sweep.SweepSpec":
    """The sweep of a run group (checked: unknown names and impossible settings fail here)."""
    grid = {k: list(v) for k, v in group.grid.items()}
    return sweep.make_spec(group.arch, group.task, grid, group.seeds, plan.training_profile, device,
                           dict(group.model), dict(group.task_settings), **dict(group.train))


def folder_for(spec: "sweep.SweepSpec", runs: Path) -> Path:
    return sweep.sweep_folder(spec, None, runs)


def cells(spec: "sweep.SweepSpec", folder: Path) -> list:
    return sweep.plan_cells(spec, folder)


def train(spec: "sweep.SweepSpec", folder: Path, options: "ReproduceOptions", echo: Callable[[str], None]) -> None:
    """Train the cells of ``spec`` not yet finished into ``folder`` (a sweep folder)."""
    pending = [c for c in sweep.plan_cells(spec, folder) if not c.done] if (folder / sweep.SWEEP_JSON).is_file() else None
    if pending == []:
        return
    sweep.run_sweep(spec=spec, folder=folder, executor=options.executor, workers=options.workers,
                    device=options.device, draw=True, progress=options.progress, log=echo)


def call_probe(probe, model, task, out_dir: Path, run_dir: Path, options: dict[str, Any]) -> dict[str, Any]:
    if "run_dir" in inspect.signature(probe.run).parameters:
        options = {**options, "run_dir": run_dir}
    return probe.run(model, task, out_dir, **options)
