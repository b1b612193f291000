"""``achilles reproduce``: run a recipe (a paper finding) and write its claims-vs-measured report."""

from __future__ import annotations

from pathlib import Path

import click

from achilles.cli.completion import complete_arch, complete_recipe
from achilles.cli.options import deprecated_alias, is_quiet, json_option, seeds_option, takes_alias, threads_option, verbosity_option
from achilles.cli.table import format_table
from achilles.cli.commands.train import PRECISION_CHOICES, PRECISION_HELP, parse_settings


def _cores() -> int:
    from achilles.sweep import cpu_count

    return cpu_count()


def _default_profile(device: str) -> str:
    from achilles.training.trainer import default_profile, resolve_device

    return "paper" if default_profile(resolve_device(device)) == "paper" else "quick"


def _list(echo, as_json: bool = False) -> None:
    from achilles.recipes import get_recipe, list_recipes
    from achilles.recipes.cost import estimate_plan, how_estimated

    rows = []
    for name in list_recipes():
        recipe = get_recipe(name)
        cells = [name, f"{recipe.paper.label} {recipe.source}", len(recipe.claims)]
        for profile in ("quick", "paper"):
            if profile not in recipe.plans:
                cells += ["-", "-"]
                continue
            plan = recipe.plan(profile)
            cells += [estimate_plan(plan, "cpu", workers=_cores()).text(), estimate_plan(plan, "cuda").text()]
        rows.append(cells)
    if as_json:
        import json

        keys = ["recipe", "reproduces", "claims", "quick_cpu", "quick_gpu", "paper_cpu", "paper_gpu"]
        echo(json.dumps([dict(zip(keys, row)) for row in rows], indent=2))
        return
    if not rows:
        echo("No recipes are registered (is the achilles package installed with its plugins?).")
        return
    echo(format_table(rows, ["recipe", "reproduces", "claims", "quick: this CPU", "quick: GPU",
                             "paper: this CPU", "paper: GPU"], max_width=48))
    echo(f"\nEstimated from measured training throughput (achilles/recipes/throughput.json), "
         f"{_cores()} run(s) at once on this CPU, one at a time on a GPU; '~' = scaled from a measured "
         f"shape by layers x width² x length.\n  {how_estimated('cpu')}\n  {how_estimated('cuda')}")


def _dry_run(rep, echo) -> None:
    from achilles.recipes import reproduction, sweeps
    from achilles.recipes.cost import estimate_plan
    from achilles.recipes.report import group_budget

    recipe, plan = rep.recipe, rep.plan
    reproduction.check_out_folder(rep.out, recipe, rep.profile)
    rows, pending = [], {}
    for g in rep.groups:
        group = g.group
        cells = sweeps.cells(g.spec, g.folder, rep.device)
        todo = sum(not c.done for c in cells)
        pending[group.name] = todo
        b = group_budget(group, plan)
        rows.append([group.name, group.arch, group.task, b["grid"] or "-", group.seeds, len(cells), todo,
                     f"{b['train_samples']} x {b['epochs']}"])
    kind = "cuda" if rep.device != "cpu" and _default_profile(rep.device) == "paper" else "cpu"
    workers = 1 if kind == "cuda" else (rep.training.workers or _cores())
    echo(f"Recipe {recipe.name} ({recipe.paper.label} {recipe.source}), profile {rep.profile}, into {rep.out}")
    if recipe.subject_note:
        echo(recipe.subject_note)
    echo(format_table(rows, ["group", "arch", "task", "grid", "seeds", "runs", "to train", "samples x epochs"],
                      max_width=50))
    for step in plan.probes:
        where = ", ".join(f"{k}={v}" for k, v in step.where.items())
        echo(f"probe {step.probe} on {step.on}" + (f" ({where})" if where else ""))
    echo(f"{len(recipe.claims)} claim(s): " + "; ".join(c.id for c in recipe.claims))
    remaining = estimate_plan(plan, kind, workers=workers, pending_only=pending)
    echo(f"Estimated training time left on this machine ({kind}, {workers} run(s) at once): {remaining.text()}")


@click.command("reproduce")
@click.argument("names", metavar="NAME...", nargs=-1, shell_complete=complete_recipe)
@click.option("--profile", type=click.Choice(["quick", "paper"]), default=None,
              help="quick: designed to show the finding on a CPU in minutes per run; paper: the paper's "
                   "settings (a GPU). Default: paper on a GPU, quick on a CPU.")
@seeds_option(default="the recipe's, usually 3, per run group")
@deprecated_alias("--set", "--train-set", "overrides", multiple=True, metavar="KEY=VALUE")
@click.option("--train-set", "overrides", multiple=True, metavar="KEY=VALUE", callback=takes_alias,
              help="Training setting for every run, e.g. --train-set epochs=2 (epochs, train_samples, eval_samples, "
                   "lr_peak, batch_size, ...).")
@click.option("--data-seed", type=click.IntRange(min=0), default=None,
              help="Pin every run's training and evaluation data to this seed, so seeds differ only in "
                   "initialisation and batch order (default: each run's seed draws its own data; "
                   "the same as --train-set data_seed=N).")
@click.option("--precision", type=click.Choice(PRECISION_CHOICES), default=None,
              help=PRECISION_HELP + " The same as --train-set precision=P.")
@click.option("--subject", default=None, metavar="ARCH", shell_complete=complete_arch,
              help="Measure the recipe's claims on ARCH in place of the architecture the paper studies "
                   "(its subject, Mamba2); the controls stay. See `achilles atlas` for many at once.")
@click.option("--executor", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="local: a process pool on this machine; ray: a Ray cluster.")
@click.option("--workers", type=int, default=None, help="Local worker processes (default: one per core on a CPU).")
@threads_option(" per worker")
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Output folder (default reproductions/NAME-PROFILE; with --all, one sub-folder per recipe).")
@click.option("--runs", "runs_dir", type=click.Path(file_okay=False), default=None,
              help="The run store, shared by recipes that need the same runs (default reproductions/runs; "
                   "OUT/runs with --out).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--dry-run", is_flag=True, help="Print the plan and the estimated time, train nothing.")
@click.option("--list", "list_", is_flag=True, help="List the recipes with their claims and estimated cost (--json: as JSON).")
@click.option("--all", "all_", is_flag=True, help="Run every registered recipe, one after another.")
@click.option("--summary", "summary", type=click.Path(file_okay=False, exists=True), default=None,
              help="Only (re)write FOLDER/README.md: one row per claim of every FOLDER/*/report.json.")
@click.option("--progress/--no-progress", default=None, help="Progress bars (default: on in a terminal).")
@json_option
@verbosity_option
def reproduce_command(names, profile, seeds, overrides, data_seed, precision, subject, executor, workers, threads, out, runs_dir, device, dry_run, list_, all_,
                      summary, progress, as_json=False):
    """Reproduce a finding of the papers with one command: train the recipe's runs (resumably),
    probe them, and write report.md / report.json with each claim of the paper next to what this
    run measured and a computed verdict (held, not held, inconclusive).

    \b
    Example:  achilles reproduce --list
              achilles reproduce achilles-fig9 --dry-run
              achilles reproduce achilles-fig9               # quick profile on a CPU
              achilles reproduce --all --profile quick --out examples/reports
    """
    from achilles.recipes import get_recipe, list_recipes
    from achilles.recipes.report import write_summary
    from achilles.recipes.reproduction import default_runs, plan_reproduction, reproduce, train_together
    from achilles.sweep import SweepOptions
    from achilles.sweep import SweepInterrupted

    if list_:
        _list(click.echo, as_json=as_json)
        return
    if as_json:
        raise click.UsageError("--json goes with --list (a reproduction writes its result to report.json)")
    if summary:
        click.echo(f"Wrote {write_summary(Path(summary))}")
        return
    if all_ and names:
        raise click.UsageError("give recipe NAMEs or --all, not both")
    if not all_ and not names:
        raise click.UsageError("give a recipe NAME (see `achilles reproduce --list`) or --all")
    several = all_ or len(names) > 1
    from achilles.recipes.subject import with_subject

    recipes = [with_subject(get_recipe(n), subject) for n in (list_recipes() if all_ else names)]  # unknown: close matches
    profile = profile or _default_profile(device)
    train_overrides = parse_settings(overrides, "--train-set")
    if data_seed is not None:
        train_overrides["data_seed"] = data_seed
    if precision is not None:
        train_overrides["precision"] = precision
    if train_overrides.get("precision") not in (None, "fp32") and not dry_run:
        from achilles.training.precision import check_precision
        from achilles.training.trainer import resolve_device

        check_precision(train_overrides["precision"], resolve_device(device))  # one line, before any folder
    training = SweepOptions(executor=executor, workers=workers, threads=threads, device=device,
                            progress=False if is_quiet() and progress is None else progress)
    reps = []
    for recipe in recipes:  # several recipes: OUT/NAME each, one run store OUT/runs
        folder = (Path(out) / recipe.name if out else None) if several else out
        store = runs_dir or (default_runs(Path(out)) if out else None)
        reps.append(plan_reproduction(recipe, profile=profile, seeds=seeds, train_overrides=train_overrides,
                                      out=folder, runs=store, training=training))
    if dry_run:
        for rep in reps:
            _dry_run(rep, click.echo)
        return
    none_finished = []
    try:
        if several:
            click.echo(f"Training the runs of {len(reps)} recipes together (profile {profile})")
            train_together(reps)
        for rep in reps:
            click.echo(f"== {rep.recipe.name}: {rep.recipe.title} (profile {profile})")
            result = reproduce(rep)
            _show(result)
            if result.results.runs and not any(r.finished for r in result.results.runs):
                none_finished.append(result)
    except SweepInterrupted:
        click.echo("Interrupted: finished runs are kept. Run the same command again to resume.", err=True)
        raise SystemExit(130)
    if several and out:
        click.echo(f"Summary: {write_summary(Path(out))}")
    if none_finished:  # every run failed: the claims are empty, and the exit code says so
        from achilles.errors import AchillesError

        first = none_finished[0].results
        failed = sum(r.status == "failed" for r in first.runs)
        raise AchillesError(f"none of the {len(first.runs)} run(s) of {first.recipe.name} finished ({failed} failed, "
                            f"{len(first.runs) - failed} stopped by an error): see the lines above and each run's "
                            f"run.json (its 'failure') under {first.runs[0].path.parent.parent}"
                            + (f"; {len(none_finished) - 1} other recipe(s) too" if len(none_finished) > 1 else ""))


def _show(result) -> None:
    """The claims table of one reproduction, and where its report is."""
    rows = [[c["id"], c["measured"], c["rule"], c["verdict"]] for c in result.claims]
    click.echo("\n" + format_table(rows, ["claim", "measured [95%]", "rule", "verdict"], max_width=50))
    missing = result.results.missing
    if missing:
        click.echo(f"{len(missing)} run(s) not finished: " + ", ".join(r.label for r in missing[:5]), err=True)
    click.echo(f"Report: {result.report}")


def register(cli: click.Group) -> None:
    cli.add_command(reproduce_command)
