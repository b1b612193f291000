"""An example achilles plugin: a task, an architecture, a probe, a CLI command and a recipe, each
registered through its hook (the contract they follow is docs/plugins.md of achilles).

This module is the entry point: achilles imports it for ``achilles --help`` and every shell
completion, so it stays light. It imports no torch and defines no component; the components
live in ``components.py``, imported inside the registration hooks (which run only when a
command needs the registries) and inside the command's function."""

from __future__ import annotations

import click

import achilles  # light: achilles' own package imports torch only when a component needs it
from achilles import hookimpl
from achilles.cli.options import verbosity_option


@click.command("example-samples")
@verbosity_option
@click.option("-n", "count", type=click.IntRange(1, 100), default=3, show_default=True, help="How many samples.")
def example_samples_command(count: int) -> None:
    """Print a few samples of the example-successor task with their targets."""
    task = achilles.get_task("example-successor")
    batch = task.generate("test", n=count, seed=0)
    for i in range(count):
        click.echo(task.describe(batch, i))


@hookimpl
def register_recipes(register):
    from .components import successor_recipe

    recipe = successor_recipe()
    register(recipe.name, recipe, description=recipe.title)


@hookimpl
def register_tasks(register):
    from .components import SuccessorTask  # torch loads here, when the registries are needed

    register("example-successor", SuccessorTask, description="Predict the next token id (example plugin)")


@hookimpl
def register_architectures(register):
    from .components import PositionwiseMLP

    register("example-mlp", PositionwiseMLP, description="Per-position MLP, no mixing (example plugin)")


@hookimpl
def register_probes(register):
    from .components import ResidualNormProbe

    register("example-residual-norm", ResidualNormProbe, description="Residual-stream norm per layer (example plugin)")


@hookimpl
def register_commands(cli):
    cli.add_command(example_samples_command)
