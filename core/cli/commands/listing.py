"""``achilles list`` and ``achilles plugins``."""

from __future__ import annotations

import json

import click

from achilles.contract.lookup import create_architecture
from achilles.cli.options import json_option, verbosity_option
from achilles.cli.completion import complete_list_pattern
from achilles.contract.loader import get_state
from achilles.cli.table import format_table

_KIND_ALIASES = {"tasks": "task", "task": "task", "archs": "architecture", "arch": "architecture",
                 "architectures": "architecture", "probes": "probe", "probe": "probe"}


def _param_count(name: str) -> str:
    try:
        n = create_architecture(name).num_parameters()
    except Exception as exc:  # a broken plugin arch must not break the listing
        return f"? ({type(exc).__name__})"
    return f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n / 1e3:.1f}k"


@click.command("list")
@click.argument("kind", required=False, type=click.Choice(sorted(_KIND_ALIASES)), metavar="[tasks|archs|probes]")
@click.argument("pattern", required=False, default="", shell_complete=complete_list_pattern)
@json_option
@verbosity_option
def list_command(kind: str | None, pattern: str, as_json: bool = False) -> None:
    """List registered tasks, architectures and probes (PATTERN takes wildcards, e.g. 'mamba2*')."""
    state = get_state()
    kinds = [_KIND_ALIASES[kind]] if kind else ["task", "architecture", "probe"]
    if as_json:
        out = {}
        for k in kinds:
            registry = state.registries[k]
            out[f"{k}s"] = [{"name": e.name, "plugin": e.plugin, "description": e.description,
                             **({"params": _param_count(e.name)} if k == "architecture" else {})}
                            for e in registry.entries() if e.name in registry.names(pattern or "")]
        click.echo(json.dumps(out, indent=2))
        return
    for i, k in enumerate(kinds):
        registry = state.registries[k]
        entries = [e for e in registry.entries() if e.name in registry.names(pattern or "")]
        if len(kinds) > 1:
            click.echo(("\n" if i else "") + click.style(f"{k}s ({len(entries)})", bold=True))
        if not entries:
            click.echo(f"  no {k}s registered" + (f" matching {pattern!r}" if pattern else ""))
            continue
        if k == "architecture":
            rows = [(e.name, _param_count(e.name), e.plugin, e.description) for e in entries]
            click.echo(format_table(rows, ["name", "params (default)", "plugin", "description"], 70))
        else:
            rows = [(e.name, e.plugin, e.description) for e in entries]
            click.echo(format_table(rows, ["name", "plugin", "description"], 70))


@click.command("plugins")
@json_option
@verbosity_option
def plugins_command(as_json: bool = False) -> None:
    """Installed plugins, their versions, what each registers, and any that failed."""
    ctx = click.get_current_context()
    ctx.find_root().command.list_commands(ctx)  # attaches the plugins' commands, so they are listed
    state = get_state()
    if as_json:
        click.echo(json.dumps({
            "plugins": [{"name": i.name, "distribution": i.distribution, "version": i.version,
                         "registers": {f"{k}s": list(v) for k, v in i.registered.items()}, "hooks": list(i.hooks)}
                        for i in state.plugins.values()],
            "conflicts": [{"plugin": c.loser, "kind": c.kind, "name": c.name, "kept_by": c.owner}
                          for c in state.conflicts],
            "failures": [{"plugin": f.name, "stage": f.stage, "error": f.error} for f in state.failures]},
            indent=2, default=str))
        return
    rows = []
    for info in state.plugins.values():  # one row per kind of hook, every name listed
        kinds = [f"{k}s: {', '.join(v)}" for k, v in info.registered.items()] or ["(nothing)"]
        kinds.append(f"hooks: {', '.join(info.hooks) or '(none)'}")
        rows += [(info.name, info.distribution, info.version, kinds[0])]
        rows += [("", "", "", what) for what in kinds[1:]]
    click.echo(format_table(rows, ["plugin", "distribution", "version", "registers"], 10_000)
               if rows else "no plugins loaded")
    if state.conflicts:
        click.echo("\n" + click.style("names skipped (already taken)", bold=True))
        click.echo(format_table([(c.loser, c.kind, c.name, c.owner) for c in state.conflicts],
                                ["plugin", "kind", "name", "kept by"], 90))
    if state.failures:
        click.echo("\n" + click.style("failed plugins", bold=True))
        click.echo(format_table([(f.name, f.stage, f.error) for f in state.failures],
                                ["plugin", "stage", "error"], 90))


def register(cli: click.Group) -> None:
    cli.add_command(list_command)
    cli.add_command(plugins_command)
