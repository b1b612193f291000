"""``achilles data``: look at what a task generates."""

from __future__ import annotations

import json
from typing import Any

import click

from achilles.contract.lookup import get_task
from achilles.cli.options import json_option, verbosity_option
from achilles.cli.completion import complete_task
from achilles.errors import ConfigError


def parse_settings(items: tuple[str, ...]) -> dict[str, Any]:
    """``("n_layers=3", "placements=last,shuffle")`` -> settings; values are read as JSON when
    they parse (numbers, true/false, null, lists) and kept as strings otherwise."""
    settings: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError("--set", f"expected KEY=VALUE, got {item!r}")
        try:
            settings[key] = json.loads(raw)
        except json.JSONDecodeError:
            settings[key] = raw
    return settings


@click.group("data")
def data_group() -> None:
    """Look at the samples a task generates."""


@data_group.command("show")
@click.option("--task", "-t", "task_name", required=True, help="Task name (see `achilles list tasks`).",
              shell_complete=complete_task)
@click.option("--split", "-s", default=None, help="Split to draw from (default: the task's first split).")
@click.option("-n", "--num", "num", default=5, show_default=True, type=click.IntRange(min=1),
              help="Number of samples.")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(min=0), help="Data seed.")
@click.option("--set", "settings", multiple=True, metavar="KEY=VALUE",
              help="A task setting, repeatable: --set n_layers=3 --set placements=last,shuffle")
@json_option
@verbosity_option
def show_command(task_name: str, split: str | None, num: int, seed: int, settings: tuple[str, ...],
                 as_json: bool = False) -> None:
    """Print decoded samples of a task with their targets.

    \b
    Examples:
      achilles data show --task composite --split test
      achilles data show --task inverse --split ood --set n_layers=3
      achilles data show --task mqar --set placements=shuffle --set noise=true -n 2
    """
    task = get_task(task_name, **parse_settings(settings))
    split = split or task.splits[0]
    if split not in task.splits:
        raise ConfigError("split", f"{split!r} is not a split of {task_name} (splits: {', '.join(task.splits)})")
    from achilles.models.limits import check_samples_fit

    check_samples_fit(num, task.seq_len, "-n")  # before generating: never minutes of swapping
    batch = task.generate(split, num, seed=seed)
    if as_json:
        click.echo(json.dumps({"task": task.name, "task_config": task.config, "split": split, "seed": seed,
                               "vocab_size": task.vocab_size, "seq_len": task.seq_len,
                               "split_sizes": task.split_sizes(),
                               "samples": [task.describe(batch, i) for i in range(len(batch))]}, indent=2, default=str))
        return
    sizes = ", ".join(f"{s} {c:,}" for s, c in task.split_sizes().items())
    click.echo(f"{task!r}  split={split}  seed={seed}")
    click.echo(f"vocab_size={task.vocab_size}  seq_len={task.seq_len}  default split sizes: {sizes}")
    for i in range(len(batch)):
        click.echo(f"[{i}] {task.describe(batch, i)}")


def register(cli: click.Group) -> None:
    cli.add_command(data_group)
