"""``achilles atlas``: every claim of a set of recipes, measured on every subject architecture."""

from __future__ import annotations

from pathlib import Path

import click

from achilles.cli.completion import complete_names
from achilles.cli.options import deprecated_alias, is_quiet, seeds_option, takes_alias, threads_option, verbosity_option
from achilles.cli.table import format_table
from achilles.cli.commands.train import parse_settings


def _names(text: str | None, default) -> list[str]:
    names = [n.strip() for n in (text or "").split(",") if n.strip()] or list(default)
    if len(set(names)) != len(names):
        raise click.UsageError(f"a name is given twice in {text!r}")
    return names


@click.command("atlas")
@click.option("--recipes", default=None, metavar="NAME,...", shell_complete=complete_names("recipe"),
              help="Recipes whose claims to ask (default: achilles-fig4, achilles-fig9, copy-length, "
                   "shortcuts-position).")
@click.option("--subjects", default=None, metavar="ARCH,...", shell_complete=complete_names("architecture"),
              help="Architectures to measure them on, each in the place of the paper's Mamba2 (default: mamba2, "
                   "mamba1, deltanet, deltanet-noconv, lstm, transformer, transformer-rope).")
@click.option("--profile", type=click.Choice(["quick", "paper"]), default="quick", show_default=True,
              help="quick: a CPU budget; paper: the papers' settings (a GPU).")
@seeds_option(default="each recipe's, per run group")
@deprecated_alias("--set", "--train-set", "overrides", multiple=True, metavar="KEY=VALUE")
@click.option("--train-set", "overrides", multiple=True, metavar="KEY=VALUE", callback=takes_alias,
              help="Training setting for every run, e.g. --train-set epochs=2.")
@click.option("--out", type=click.Path(file_okay=False), default="atlas", show_default=True,
              help="Output folder: README.md, atlas.png, one sub-folder per subject and recipe, and the run store.")
@click.option("--executor", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="local: a process pool on this machine; ray: a Ray cluster.")
@click.option("--workers", type=int, default=None, help="Local worker processes (default: one per core on a CPU).")
@threads_option(" per worker")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--dry-run", is_flag=True, help="Print the plan and the estimated time, train nothing.")
@click.option("--progress/--no-progress", default=None, help="Progress bars (default: on in a terminal).")
@verbosity_option
def atlas_command(recipes, subjects, profile, seeds, overrides, out, executor, workers, threads, device, dry_run,
                  progress):
    """Ask which sequence mixers share Mamba's Achilles' heel: run every claim of RECIPES on every
    architecture in SUBJECTS (each in the place of the paper's Mamba2, controls unchanged) and
    write OUT/README.md, one row per claim and one column per architecture, with a heatmap.
    Resumable: finished runs are reused, Ctrl-C stops cleanly; an atlas into the same OUT adds
    its cells to the page, keeping the earlier ones (a long atlas runs a few cells at a time).

    \b
    Example:  achilles atlas --dry-run
              achilles atlas --subjects mamba2,deltanet,lstm --recipes achilles-fig9
    """
    from achilles.recipes import get_recipe
    from achilles.recipes.atlas import DEFAULT_RECIPES, DEFAULT_SUBJECTS, cell_folder, with_earlier, write_atlas
    from achilles.recipes.cost import estimate_plan
    from achilles.recipes.reproduction import plan_reproduction, reproduce, train_together
    from achilles.recipes.subject import with_subject
    from achilles.recipes import sweeps
    from achilles.sweep import SweepOptions
    from achilles.sweep import SweepInterrupted

    recipe_list = [get_recipe(n) for n in _names(recipes, DEFAULT_RECIPES)]  # unknown: close matches
    subject_list = _names(subjects, DEFAULT_SUBJECTS)
    train_overrides = parse_settings(overrides, "--train-set")
    training = SweepOptions(executor=executor, workers=workers, threads=threads, device=device,
                            progress=False if is_quiet() and progress is None else progress)
    jobs = []
    for subject in subject_list:
        for recipe in recipe_list:
            swapped = with_subject(recipe, subject)  # a fixed subject or an unknown name: one line, nothing made
            jobs.append(plan_reproduction(swapped, profile=profile, seeds=seeds, train_overrides=train_overrides,
                                          out=cell_folder(Path(out), subject, recipe.name), runs=Path(out) / "runs",
                                          training=training))
    if dry_run:
        rows, pending_total = [], {}
        for rep in jobs:
            recipe, plan = rep.recipe, rep.plan
            todo = {}
            for g in rep.groups:
                group, key = g.group, str(g.folder)
                done = sum(c.done for c in sweeps.cells(g.spec, g.folder, device))
                todo[group.name] = group.runs - done
                pending_total[key] = (group, plan, group.runs - done)  # a shared control counts once
            rows.append([recipe.tested_subject or recipe.subject, recipe.name, sum(todo.values()),
                         estimate_plan(plan, "cpu", workers=workers or sweeps_cores(), pending_only=todo).text()])
        click.echo(format_table(rows, ["subject", "recipe", "runs to train", "estimate alone"], max_width=40))
        from dataclasses import replace

        from achilles.recipes.recipe import Plan

        left = {key: (g, p, n) for key, (g, p, n) in pending_total.items() if n}
        shared = Plan(runs=tuple(replace(g, name=key) for key, (g, _, _) in left.items()),
                      training_profile=jobs[0].plan.training_profile)
        pending = {key: n for key, (_, _, n) in left.items()}
        total = estimate_plan(shared, "cpu", workers=workers or sweeps_cores(), pending_only=pending)
        click.echo(f"{len(jobs)} cell(s) ({len(subject_list)} subject(s) x {len(recipe_list)} recipe(s)) into {out}; "
                   f"{sum(pending.values())} run(s) to train, shared runs counted once: about {total.text()} on this "
                   "CPU.")
        return
    try:
        click.echo(f"Training the runs of {len(jobs)} atlas cell(s) together (profile {profile})")
        train_together(jobs)
        for rep in jobs:
            click.echo(f"== {rep.recipe.tested_subject or rep.recipe.subject} x {rep.recipe.name}")
            reproduce(rep)
    except SweepInterrupted:
        click.echo("Interrupted: finished runs are kept. Run the same command again to resume.", err=True)
        raise SystemExit(130)
    page_recipes, page_subjects = with_earlier(Path(out), recipe_list, subject_list)  # a few cells at a time
    click.echo(f"Atlas: {write_atlas(Path(out), page_recipes, page_subjects, profile)}")


def sweeps_cores() -> int:
    from achilles.sweep import cpu_count

    return cpu_count()


def register(cli: click.Group) -> None:
    cli.add_command(atlas_command)
