"""``achilles sweep``: train a grid of runs, resume it, aggregate it and draw its phase diagram."""

from __future__ import annotations

from pathlib import Path

import click

from achilles.cli.completion import complete_arch, complete_task
from achilles.cli.options import deprecated_alias, info, seeds_option, takes_alias, threads_option, verbosity_option
from achilles.errors import AchillesError
from achilles.cli.table import format_table
from achilles.cli.commands.train import PRECISION_CHOICES, PRECISION_HELP, parse_settings


@click.command("sweep")
@click.option("--arch", help="Architecture name (see `achilles list archs`).", shell_complete=complete_arch)
@click.option("--task", "task_name", help="Task name (see `achilles list tasks`).", shell_complete=complete_task)
@click.option("--grid", "grid", multiple=True, metavar="NAME=VALUES",
              help="A grid axis: NAME=a:b:step (inclusive) or NAME=v1,v2,... NAME is a model setting "
                   "(gamma, n_layers, d_model, ...), task.NAME a task setting, train.NAME a training setting.")
@seeds_option(default="1", lists=True)
@click.option("--profile", type=click.Choice(["paper", "quick"]), default=None,
              help="paper: appendix D; quick: minutes on a CPU. Default: paper on a GPU, quick on a CPU.")
@click.option("--name", default=None, help="Sweep name: the folder is <sweeps-dir>/<arch>.<task>-<name> "
                                           "(default: a hash of the sweep's settings).")
@click.option("--out", type=click.Path(file_okay=False), default=None, help="The sweep folder, explicitly.")
@click.option("--sweeps-dir", default="sweeps", show_default=True, type=click.Path(file_okay=False))
@click.option("--resume", "resume", type=click.Path(file_okay=False), default=None,
              help="Continue (or just re-aggregate) the sweep in this folder, from its sweep.json.")
@click.option("--executor", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="local: a process pool on this machine; ray: a Ray cluster (pip install \"achilles[ray]\").")
@click.option("--workers", type=int, default=None,
              help="Local worker processes (default: one per core on a CPU, one on a GPU; 0 trains in this process).")
@threads_option(" per worker (1 per Ray task)")
@click.option("--address", default=None, help="Ray cluster address (default: $RAY_ADDRESS, else a local instance).")
@click.option("--ray-gpus", "gpus_per_unit", type=float, default=0.0, show_default=True,
              help="GPUs each Ray task reserves (e.g. 0.25: four units share a GPU; 0: Ray hides GPUs).")
@click.option("--ensemble/--no-ensemble", default=None,
              help="Train cells that differ only in seed and gamma as one batched ensemble "
                   "(default: on a GPU yes, on a CPU no: the faster path as measured).")
@click.option("--max-ensemble", type=int, default=16, show_default=True, help="Most cells in one ensemble.")
@click.option("--ensemble-method", type=click.Choice(["auto", "vmap", "loop"]), default="auto", show_default=True,
              help="vmap: one batched forward (torch.func); loop: members stepped in turn; auto: the faster "
                   "of the two on one timed step (vmap only where it reproduces each member's forward).")
@click.option("--epochs", type=int, default=None, help="Override the profile's number of epochs.")
@click.option("--batch-size", type=int, default=None, help="Override the profile's batch size.")
@click.option("--lr", "lr_peak", type=float, default=None, help="Override the peak learning rate.")
@deprecated_alias("--samples", "--train-samples", "train_samples", type=int, default=None)
@click.option("--train-samples", "train_samples", type=int, default=None, callback=takes_alias,
              help="Training samples (default: profile's).")
@click.option("--eval-samples", type=int, default=None, help="Evaluation samples per split (default: profile's).")
@click.option("--data-seed", type=click.IntRange(min=0), default=None,
              help="Pin every cell's training and evaluation data to this seed, so seeds differ only in "
                   "initialisation and batch order (default: each cell's seed draws its own data).")
@click.option("--set", "task_set", multiple=True, metavar="KEY=VALUE", help="Task setting shared by all cells.")
@click.option("--model-set", multiple=True, metavar="KEY=VALUE", help="Architecture setting shared by all cells.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--precision", type=click.Choice(PRECISION_CHOICES), default=None, help=PRECISION_HELP)
@click.option("--metric", "metrics", multiple=True,
              help="Metric(s) of the phase diagram, METRIC or SPLIT.METRIC (default: the task's phase metrics, "
                   "e.g. acc_43_composite and acc_43_symmetric for composite, else its headline metric).")
@click.option("--dry-run", is_flag=True, help="List the cells and what would train, then stop.")
@click.option("--report-only", is_flag=True, help="Only (re)write results.csv and the heatmaps.")
@click.option("--progress/--no-progress", default=None, help="Progress bar over cells (default: on in a terminal).")
@verbosity_option
def sweep_command(arch, task_name, grid, seeds, profile, name, out, sweeps_dir, resume, executor, workers, threads,
                  address, gpus_per_unit, ensemble, max_ensemble, ensemble_method, epochs, batch_size, lr_peak, train_samples,
                  eval_samples, data_seed, task_set, model_set, device, precision, metrics, dry_run, report_only,
                  progress):
    """Train a grid of runs (a phase diagram), resumably, and aggregate it.

    Each cell is an ordinary run folder inside the sweep folder; finished cells are skipped, so
    running the same command again resumes. The sweep writes results.csv (one row per cell) and
    phase_<metric>.png heatmaps (x = gamma, y = depth, colour = mean over seeds).

    \b
    Example:  achilles sweep --arch mamba2 --task composite \\
                  --grid gamma=0.5:1.0:0.1 --grid n_layers=2,3,4,5,6 --seeds 3
              achilles sweep --resume sweeps/mamba2.composite-1a2b3c4d
    """
    from achilles import sweep as sw

    if resume:
        folder = Path(resume)
        spec = sw.SweepSpec.load(folder)
        fixed = [flag for flag, value in (("--arch", arch), ("--task", task_name), ("--grid", grid),
                                          ("--profile", profile), ("--epochs", epochs), ("--batch-size", batch_size),
                                          ("--lr", lr_peak), ("--train-samples", train_samples),
                                          ("--eval-samples", eval_samples), ("--data-seed", data_seed is not None),
                                          ("--precision", precision),
                                          ("--set", task_set),
                                          ("--model-set", model_set)) if value]
        if fixed:
            raise click.UsageError(f"--resume takes the sweep from its sweep.json; drop {', '.join(fixed)}")
    else:
        if not arch or not task_name:
            raise click.UsageError("--arch and --task are required (or --resume SWEEP_DIR)")
        spec = sw.make_spec(arch, task_name, list(grid), 1 if seeds is None else seeds, profile, device,
                            parse_settings(model_set, "--model-set"), parse_settings(task_set, "--set"),
                            epochs=epochs, batch_size=batch_size, lr_peak=lr_peak, train_samples=train_samples,
                            eval_samples=eval_samples, data_seed=data_seed, precision=precision)
        if precision:
            from achilles.training.precision import check_precision
            from achilles.training.trainer import resolve_device

            check_precision(precision, resolve_device(device))  # refused in one line, before any folder
        folder = Path(out) if out else sw.sweep_folder(spec, name, sweeps_dir)
    options = sw.SweepOptions(folder=folder, executor=executor, workers=workers, threads=threads, address=address,
                              ensemble=ensemble, max_ensemble=max_ensemble, ensemble_method=ensemble_method,
                              device=device, gpus_per_unit=gpus_per_unit, metrics=list(metrics) or None,
                              progress=progress)
    if dry_run:
        _dry_run(sw, spec, options)
        return
    if report_only:
        if not (folder / sw.SWEEP_JSON).is_file():
            raise AchillesError(f"{folder} is not a sweep folder (no {sw.SWEEP_JSON})")
        rows, used, figures = sw.aggregate(folder, spec, metrics=options.metrics)
        _report(sw, spec, folder, rows, used, figures)
        return
    if executor == "ray":
        sw.require_ray()
    if spec.profile != "paper":
        info(f"Note: profile {spec.profile} is a CPU budget, not the paper's setting; its numbers are not the paper's.")
    try:
        result = sw.run_sweep(spec, options)
    except sw.SweepInterrupted as stop:
        result = stop.result
    _report(sw, spec, folder, result.rows, result.metrics, result.figures)
    click.echo(f"{result.trained} cell(s) trained, {result.skipped} already done, in {result.seconds:.0f}s.")
    if result.failed:
        click.echo(f"{result.failed} cell(s) failed: their weights or evaluation became non-finite (see above and "
                   f"each cell's run.json in {folder}); they are kept as failed and not retried.", err=True)
    if result.errors:
        click.echo(f"{len(result.errors)} cell(s) of {folder} failed with an error (see above); re-run to retry them.",
                   err=True)
    if result.interrupted:
        click.echo(f"Interrupted: trained cells are kept. Resume with: achilles sweep --resume {folder}", err=True)
        raise SystemExit(130)
    if result.errors or result.failed:
        raise SystemExit(1)


def _report(sw, spec, folder, rows, metrics, figures) -> None:
    table, headers = sw.mean_table(spec, rows, metrics)
    click.echo("\n" + format_table(table, headers))
    click.echo(f"\nResults: {folder / sw.RESULTS_CSV}")
    for fig in figures:
        click.echo(f"Figure:  {fig}")


def _dry_run(sw, spec, options) -> None:
    cells = sw.plan_cells(spec, options.folder)
    _, _, slots = options.parallelism()
    units = sw.make_units(cells, options.use_ensemble(), options.max_ensemble, slots)
    unit_of = {id(c): i for i, u in enumerate(units) for c in u.cells}
    rows = [[*c.values.values(), c.seed, c.status, c.epoch,
             (f"{unit_of[id(c)]}" if id(c) in unit_of else "-"), c.path.name] for c in cells]
    click.echo(f"Sweep folder: {options.folder}  (profile {spec.profile})")
    click.echo(format_table(rows, [*spec.grid, "seed", "status", "epochs", "unit", "run folder"], max_width=80))
    todo = sum(len(u.cells) for u in units)
    click.echo(f"\n{len(cells)} cells: {len(cells) - todo} done, {todo} to train in {len(units)} unit(s)"
               + (" (ensembles of cells differing only in seed and gamma)" if options.use_ensemble() else ""))


def register(cli: click.Group) -> None:
    cli.add_command(sweep_command)
