"""``achilles probe``: run a registered probe on a saved model and print its headline numbers."""

from __future__ import annotations

import inspect
import json
import re
from pathlib import Path

import click

from ..table import format_table
from .train import _load, parse_settings


def default_out_dir(run_id: str, run_path: Path, probe: str) -> Path:
    """``RUN/probes/<probe>`` for a local run folder; for a zoo id or a Hub checkpoint (whose
    folder is a download cache) ``./probes/<id>/<probe>`` instead."""
    if Path(run_id).expanduser().is_dir():
        return Path(run_path) / "probes" / probe
    return Path("probes") / re.sub(r"[^A-Za-z0-9._-]+", "_", run_id).strip("_") / probe


def _accepts(function, keyword: str) -> bool:
    try:
        return keyword in inspect.signature(function).parameters
    except (TypeError, ValueError):
        return False


def headline_text(result: dict) -> str:
    """The per-row table (if the probe gives one) and the headline numbers, as plain text."""
    parts = []
    table = result.get("table")
    if isinstance(table, dict) and table.get("rows"):
        parts.append(format_table(table["rows"], table["headers"]))
    headline = result.get("headline")
    if headline is None:  # a probe without a headline: its top-level numbers
        headline = {k: v for k, v in result.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    if headline:
        parts.append(format_table(list(headline.items()), ["headline", "value"], 80))
    return "\n\n".join(parts)


@click.command("probe")
@click.argument("run_id", metavar="RUN")
@click.option("--probe", "probe_name", required=True, help="Probe name (see `achilles list probes`).")
@click.option("--samples", type=int, default=None,
              help="Sequences: per anchor pair (blocking, substitution; default 480) or drawn (information-flow).")
@click.option("--pair", default=None, help="Anchor pair(s), e.g. 34 or 12,34 (composite probes).")
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Output folder (default RUN/probes/NAME; ./probes/ID/NAME for a zoo or Hub checkpoint).")
@click.option("--set", "settings", multiple=True, metavar="KEY=VALUE",
              help="Probe option, e.g. --set layers=[0] or --set split=train.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--json", "as_json", is_flag=True, help="Print the whole JSON result instead of the table.")
def probe_command(run_id, probe_name, samples, pair, out, settings, device, as_json):
    """Run a probe on a saved model: a run folder, a zoo id or hf-hub:ORG/NAME[@REV].

    Writes the probe's figures and NAME.json into the output folder and prints the headline numbers.

    \b
    Example:  achilles probe runs/mamba2.composite-l2-g1.0-s0-quick --probe blocking
              achilles probe runs/mamba2.composite-l2-g1.0-s0-quick --probe information-flow --pair 43
    """
    from ..api import get_probe
    from ..trainer import resolve_device

    probe = get_probe(probe_name)  # an unknown name fails here, before any loading
    options = parse_settings(settings, "--set")
    for key, value in (("samples", samples), ("pair", pair)):
        if value is not None:
            options[key] = value
    loaded = _load(run_id)
    model = loaded.model.to(resolve_device(device)).eval()
    probe.check(model, loaded.task)
    if _accepts(probe.run, "run_dir"):  # e.g. conv-similarity reads init.safetensors from it
        options["run_dir"] = loaded.path
    out_dir = Path(out) if out else default_out_dir(run_id, loaded.path, probe.name)
    result = probe.run(model, loaded.task, out_dir, **options)
    if as_json:
        click.echo(json.dumps(result, indent=2, default=str))
        return
    click.echo(f"{probe.name} on {loaded.config.get('arch')} / {loaded.task.name} ({run_id})")
    if result.get("what"):
        click.echo(f"  {result['what']}")
    text = headline_text(result)
    if text:
        click.echo("\n" + text)
    files = sorted(p.name for p in out_dir.iterdir()) if out_dir.is_dir() else []
    click.echo(f"\nWrote {', '.join(files) or 'nothing'} to {out_dir}")


def register(cli: click.Group) -> None:
    cli.add_command(probe_command)
