"""The one place recipes meet the sweep machinery and the probe interface."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from achilles import sweep
from achilles.recipes.recipe import Plan, RunGroup


def spec_for(group: RunGroup, plan: Plan, device: str = "auto") -> "sweep.SweepSpec":
    """The sweep of a run group (checked: unknown names and impossible settings fail here)."""
    from achilles.contract.lookup import registry
    from achilles.training.profiles import settings_for

    grid = {k: list(v) for k, v in group.grid.items()}
    task_cls = registry("task").get(group.task).factory
    settings_for(plan.training_profile, getattr(task_cls, "training_defaults", {}), **dict(group.train))
    return sweep.make_spec(group.arch, group.task, grid, group.seeds, plan.training_profile, device,
                           dict(group.model), dict(group.task_settings), **dict(group.train))


def cells(spec: "sweep.SweepSpec", folder: Path, device: str = "auto") -> list:
    """The cells of a run group; a pending cell that a bundled zoo entry is exactly shows as done,
    read from its bundle (``train`` copies it into the run store before anything trains)."""
    from achilles.recipes.from_zoo import as_done, zoo_cells

    planned = sweep.plan_cells(spec, folder)
    return as_done(planned, zoo_cells(spec, planned, device))


def train(jobs: list[tuple["sweep.SweepSpec", Path]], training: "sweep.SweepOptions") -> list:
    """Train the cells not yet done of every (spec, sweep folder) in one pool of workers; a cell
    that is a bundled zoo entry is copied from the zoo first (``from_zoo``), not trained."""
    from achilles.recipes.from_zoo import adopt

    adopt(jobs, training.device)
    todo = [(spec, folder) for spec, folder in jobs
            if not (folder / sweep.SWEEP_JSON).is_file() or any(not c.done for c in sweep.plan_cells(spec, folder))]
    if not todo:
        return []
    return sweep.run_sweeps(todo, training)


def call_probe(probe, model, task, out_dir: Path, run_dir: Path, config: dict, options: dict[str, Any]) -> dict[str, Any]:
    from achilles.contract.probe import ProbeContext

    context = ProbeContext(out_dir, run_dir, config, next(model.parameters()).device)
    return probe.run(model, task, context, **probe.resolve_options(options))
