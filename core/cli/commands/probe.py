"""``achilles probe``: run a registered probe on a saved model and print its headline numbers.

The command knows no probe: the options a probe declares (``Probe.options``) become ``--probe-set``
settings and, once ``--probe NAME`` is on the command line, ``--NAME VALUE`` flags of their own.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import click

from achilles.cli.completion import complete_model, complete_probe
from achilles.cli.options import deprecated_alias, info, takes_alias, verbosity_option
from achilles.errors import AchillesError, ConfigError
from achilles.cli.table import format_table
from achilles.cli.commands.train import parse_settings
from achilles.runs.layout import PROBES_DIR

_FLAGS = "achilles.probe_flags"  # ctx.meta key: the chosen probe's options as click options
_PROBE = "achilles.probe_name"  # ctx.meta key: the probe named by --probe
_FLAG_DEST = "probe_option__"  # prefix of their parameter names, apart from the command's own


def default_out_dir(run_id: str, run_path: Path, probe: str) -> Path:
    """``RUN/probes/<probe>`` for a local run folder; for a zoo id or a Hub checkpoint (whose
    folder is a download cache) ``./probes/<id>/<probe>`` instead."""
    from achilles.zoo.pull import names_local_folder

    if names_local_folder(run_id):  # not a zoo id that a folder of the same name would shadow
        return Path(run_path) / PROBES_DIR / probe
    return Path("probes") / re.sub(r"[^A-Za-z0-9._-]+", "_", run_id).strip("_") / probe


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


def _probe_name(args: list[str]) -> str | None:
    """The value of ``--probe`` in raw command-line ``args``, if there is one."""
    for i, arg in enumerate(args):
        if arg == "--":
            break
        if arg == "--probe" and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith("--probe="):
            return arg.partition("=")[2]
    return None


def _flag_type_name(option) -> str:
    return option.type.__name__.upper() if option.type is not None else "VALUE"


class ProbeCommand(click.Command):
    """``achilles probe`` with one ``--NAME VALUE`` flag per option of the probe named by
    ``--probe`` (those whose flag the command itself does not use), listed by ``--help``."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        from achilles.contract.lookup import get_probe

        name = _probe_name(args)
        probe = get_probe(name) if name and not ctx.resilient_parsing else None  # unknown: fails here
        taken = {opt for param in self.params for opt in param.opts} | {"--help", "-h"}
        flags = []
        for option in (probe.options if probe else ()):
            flag = "--" + option.name.replace("_", "-")
            if flag not in taken:
                shown = "" if "default" in option.help else f"  [default: {option.default}]"
                flags.append(click.Option([flag, _FLAG_DEST + option.name], metavar=_flag_type_name(option),
                                          help=option.help + shown))
        ctx.meta[_FLAGS] = flags
        ctx.meta[_PROBE] = probe.name if probe else None
        try:
            return super().parse_args(ctx, args)
        except click.NoSuchOption as exc:
            if probe is None or not exc.option_name.startswith("--"):
                raise
            known = ", ".join(sorted(o.name for o in probe.options)) or "none"
            raise ConfigError(exc.option_name[2:].replace("-", "_"),
                              f"probe {probe.name!r} has no such option (options: {known}), "
                              "nor has `achilles probe` (see --help)") from None

    def get_params(self, ctx: click.Context) -> list[click.Parameter]:
        params = super().get_params(ctx)
        own = len(self.params)
        return params[:own] + ctx.meta.get(_FLAGS, []) + params[own:]

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        flags = ctx.meta.get(_FLAGS, [])
        if not flags:
            return super().format_options(ctx, formatter)
        own = [p for p in self.get_params(ctx) if isinstance(p, click.Option) and p not in flags]
        with formatter.section("Options"):
            formatter.write_dl([r for r in (p.get_help_record(ctx) for p in own) if r])  # hidden: None
        with formatter.section(f"Options of probe {ctx.meta[_PROBE]!r} (each also --probe-set NAME=VALUE)"):
            formatter.write_dl([p.get_help_record(ctx) for p in flags])


@click.command("probe", cls=ProbeCommand)
@click.argument("run_id", metavar="RUN", shell_complete=complete_model)
@click.option("--probe", "probe_name", required=True, shell_complete=complete_probe,
              help="Probe name (see `achilles list probes`); with --help, also lists its options.")
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Output folder (default RUN/probes/NAME; ./probes/ID/NAME for a zoo or Hub checkpoint).")
@deprecated_alias("--set", "--probe-set", "settings", multiple=True, metavar="KEY=VALUE")
@click.option("--probe-set", "settings", multiple=True, metavar="KEY=VALUE", callback=takes_alias,
              help="Probe option, e.g. --probe-set layers=[0] or --probe-set split=train (values read as JSON, "
                   "else text).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--json", "as_json", is_flag=True, help="Print the whole JSON result instead of the table.")
@verbosity_option
def probe_command(run_id, probe_name, out, settings, device, as_json, **flags):
    """Run a probe on a saved model: a run folder, a zoo id or hf-hub:ORG/NAME[@REV].

    Writes the probe's figures and NAME.json into the output folder and prints the headline numbers.
    Every option of the probe is a --probe-set KEY=VALUE and a flag of its own (--samples 8, --pair 43);
    `achilles probe --probe NAME --help` lists them.

    \b
    Example:  achilles probe runs/mamba2.composite-l2-g1.0-s0-quick --probe blocking
              achilles probe runs/mamba2.composite-l2-g1.0-s0-quick --probe information-flow --pair 43
    """
    from achilles.contract.lookup import get_probe
    from achilles.contract.checks import check_probe_result
    from achilles.contract.probe import ProbeContext
    from achilles.training.trainer import resolve_device
    from achilles.zoo.pull import load

    probe = get_probe(probe_name)  # an unknown name fails here, before any loading
    if out:
        check_probe_out(Path(out), probe.name)
    options = parse_settings(settings, "--probe-set")
    given = {key[len(_FLAG_DEST):]: value for key, value in flags.items() if value is not None}
    # a flag's text is read as a --set value is (JSON, else text); flags win over --probe-set
    options.update(parse_settings(tuple(f"{key}={value}" for key, value in given.items()), "flag"))
    probe.resolve_options(options)  # bad names and types fail here too, before any loading
    with _run_folder_lock(run_id):  # a local run folder: no trainer writes it meanwhile
        loaded = load(run_id)
        device = resolve_device(device)
        model = loaded.model.to(device).eval()
        out_dir = Path(out) if out else default_out_dir(run_id, loaded.path, probe.name)
        if not out and out_dir.parent.parent == Path(loaded.path):  # RUN/probes/NAME: no link on the way
            from achilles.runs.layout import MANIFEST
            from achilles.runs.ownership import claim, owned_folder

            owned_folder(loaded.path, out_dir.parent.name, out_dir.name, create=False)
            if (Path(loaded.path) / MANIFEST).is_file():  # a run that lists what it wrote: probes/ is its own
                claim(loaded.path, out_dir.parent.name)
        probe.check(model, loaded.task)
        context = ProbeContext(out_dir=out_dir, run_dir=loaded.path, config=loaded.config, device=device)
        result = check_probe_result(probe.name, probe.run(model, loaded.task, context, **options))
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
    info(f"\nWrote {', '.join(files) or 'nothing'} to {out_dir}")


def check_probe_out(out: Path, probe: str) -> None:
    """A probe writes into a new or empty folder, or over an earlier output of the same probe: never
    among a user's files."""
    if not out.exists():
        return
    if not out.is_dir():
        raise AchillesError(f"--out {out} exists and is not a folder; choose another --out")
    entries = sorted(p.name for p in out.iterdir())
    if entries and f"{probe}.json" not in entries:
        shown = ", ".join(entries[:4]) + (", ..." if len(entries) > 4 else "")
        raise AchillesError(f"--out {out} holds files that are not an earlier {probe} output ({shown}); a probe "
                            "writes only into a new or empty folder or over its own earlier output: choose another --out")


def _run_folder_lock(run_id: str):
    """The lock of ``run_id`` when it is a local run folder (a probe writes RUN/probes/), else nothing."""
    from contextlib import nullcontext

    from achilles.runs.folder import RunFolder
    from achilles.runs.ownership import check_owned_folders
    from achilles.runs.folder import is_run_folder
    from achilles.zoo.pull import names_local_folder

    if not names_local_folder(run_id) or not is_run_folder(Path(run_id).expanduser()):
        return nullcontext()
    run = RunFolder(Path(run_id).expanduser())
    check_owned_folders(run.path)
    return run.lock("probe")


def register(cli: click.Group) -> None:
    cli.add_command(probe_command)
