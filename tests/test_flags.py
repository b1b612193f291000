"""One grammar of flags: every command's click parameters, walked from ``achilles.cli.main.cli``
(subcommands of ``zoo`` and ``data`` included), against the README's "Flags" table, and the
deprecated spellings that are kept for one release."""

import re
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from achilles.cli.main import BUILTIN_COMMANDS, cli
from achilles.cli.options import SEEDS_HELP, Seeds, deprecated_alias, takes_alias

README = Path(__file__).resolve().parent.parent / "README.md"


def commands() -> dict[str, click.Command]:
    """Every built-in leaf command by its full name ("zoo list", "data show", "atlas", ...)."""
    out = {}

    def walk(command, path):
        if isinstance(command, click.Group):
            for name, sub in command.commands.items():
                walk(sub, [*path, name])
        else:
            out[" ".join(path)] = command

    for name in BUILTIN_COMMANDS:
        walk(cli.commands[name], [name])
    return out


def options(command: click.Command, hidden: bool = False) -> dict[str, click.Option]:
    return {opt: p for p in command.params if isinstance(p, click.Option) and p.hidden == hidden
            for opt in p.opts + p.secondary_opts}


def table() -> dict[str, set[str]]:
    """README "Flags": flag -> the commands it is on ("every command": all of them)."""
    text = README.read_text()
    section = text[text.index("### Flags"):]
    section = section[:section.index("\n### ", 5)]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 3 or not cells[0].startswith("`"):
            continue
        flags = re.findall(r"`(-[-\w]+)", cells[0])
        on = set(commands()) if cells[2] == "every command" else {
            re.sub(r"\s*\(.*\)", "", c).strip() for c in cells[2].split(",")}
        for flag in flags:
            rows[flag] = on
    return rows


def test_the_readme_table_is_what_every_command_takes():
    rows = table()
    assert {"-q", "-v", "--json", "--seeds", "--threads", "--train-samples", "--eval-samples", "--set",
            "--model-set", "--train-set", "--probe-set"} <= set(rows)
    all_commands = commands()
    for flag, on in rows.items():
        assert on <= set(all_commands), f"README lists {flag} on unknown commands {on - set(all_commands)}"
        having = {name for name, command in all_commands.items() if flag in options(command)}
        assert having == on, f"{flag}: README says {sorted(on)}, the commands take it on {sorted(having)}"


def test_every_command_takes_quiet_and_verbose():
    for name, command in commands().items():
        assert {"-q", "--quiet", "-v", "--verbose"} <= set(options(command)), name


def test_seeds_has_one_meaning_and_one_type():
    found = 0
    for name, command in commands().items():
        option = options(command).get("--seeds")
        if option is None:
            continue
        found += 1
        assert isinstance(option.type, Seeds) and option.help.startswith(SEEDS_HELP), name
        assert option.type.convert("3", option, None) == 3  # a count: seeds 0, 1, 2
        assert option.type.lists == (name == "sweep")  # the list form where it existed
    assert found == 3
    sweep = options(commands()["sweep"])["--seeds"]
    assert sweep.type.convert("0,3,7", sweep, None) == (0, 3, 7)
    with pytest.raises(click.BadParameter, match="list of seeds is taken by `achilles sweep"):
        reproduce = options(commands()["reproduce"])["--seeds"]
        reproduce.type.convert("0,3", reproduce, None)
    with pytest.raises(click.BadParameter, match="give 1 or more"):
        sweep.type.convert("0", sweep, None)


def test_threads_is_one_range_everywhere():
    for name, command in commands().items():
        option = options(command).get("--threads")
        if option is not None:
            assert isinstance(option.type, click.IntRange) and option.type.min == 1 and option.type.max is None, name
            assert option.metavar == "N" and option.help.startswith("Torch threads"), name


def test_samples_are_named_for_what_they_count():
    for name, command in commands().items():
        assert "--samples" not in options(command), f"{name}: --samples is only a deprecated alias now"
        for flag in ("--train-samples", "--eval-samples"):
            option = options(command).get(flag)
            if option is not None:
                assert option.type is click.INT or isinstance(option.type, click.types.IntParamType), (name, flag)


def test_set_means_task_settings_and_other_namespaces_are_spelled_out():
    for name, command in commands().items():
        visible = options(command)
        if "--set" in visible:
            assert visible["--set"].metavar == "KEY=VALUE" and "task setting" in visible["--set"].help.lower(), name
        for flag, option in visible.items():
            if flag.endswith("-set"):
                assert option.metavar == "KEY=VALUE" and option.multiple, (name, flag)


def test_every_command_that_prints_a_result_takes_json():
    for name in ("eval", "probe", "list", "plugins", "data show", "zoo list", "zoo show", "reproduce"):
        assert "--json" in options(commands()[name]), name


# -- the deprecated spellings, for one release ------------------------------------------------

@pytest.mark.parametrize("command, old, new", [
    ("train", "--samples", "--train-samples"), ("sweep", "--samples", "--train-samples"),
    ("eval", "--samples", "--eval-samples"), ("reproduce", "--set", "--train-set"),
    ("atlas", "--set", "--train-set"), ("probe", "--set", "--probe-set"),
])
def test_old_spellings_are_hidden_aliases(command, old, new):
    hidden = options(commands()[command], hidden=True)
    assert old in hidden and new in options(commands()[command])
    assert old not in CliRunner().invoke(cli, [command, "--help"]).output.replace(new, "")


def _toy_command():
    @click.command()
    @deprecated_alias("--samples", "--train-samples", "train_samples", type=int, default=None)
    @click.option("--train-samples", "train_samples", type=int, default=None, callback=takes_alias)
    @deprecated_alias("--set", "--train-set", "overrides", multiple=True)
    @click.option("--train-set", "overrides", multiple=True, callback=takes_alias)
    def toy(train_samples, overrides):
        source = click.get_current_context().get_parameter_source("train_samples")
        click.echo(f"train_samples={train_samples} overrides={list(overrides)} source={source.name}")

    return toy


@pytest.mark.parametrize("args, printed", [
    (["--train-samples", "5"], "train_samples=5 overrides=[] source=COMMANDLINE"),
    (["--samples", "5"], "train_samples=5 overrides=[] source=COMMANDLINE"),
    (["--set", "a=1", "--set", "b=2"], "train_samples=None overrides=['a=1', 'b=2'] source=DEFAULT"),
    ([], "train_samples=None overrides=[] source=DEFAULT"),
])
def test_a_deprecated_alias_gives_its_value_to_the_new_spelling(args, printed):
    result = CliRunner().invoke(_toy_command(), args)
    assert result.exit_code == 0, result.output
    assert printed in result.output
    old = next((a for a in args if a in ("--samples", "--set")), None)
    warned = [line for line in result.output.splitlines() if "deprecated" in line]
    if old:
        assert warned == [f"achilles: warning: {old} is deprecated; use --train-{old[2:]}"]
    else:
        assert warned == []


@pytest.mark.parametrize("args", [["--samples", "5", "--train-samples", "6"], ["--train-samples", "6", "--samples", "5"]])
def test_giving_both_spellings_is_an_error(args):
    result = CliRunner().invoke(_toy_command(), args)
    assert result.exit_code == 2 and "--samples is the old spelling of --train-samples: give one of them" in result.output


def test_the_old_spellings_still_work_on_the_real_commands(tmp_path):
    """eval --samples reaches --eval-samples (it fails later, on the missing run, after the warning)."""
    result = CliRunner().invoke(cli, ["eval", str(tmp_path / "no-run"), "--samples", "4"])
    assert "--samples is deprecated; use --eval-samples" in result.output and result.exit_code != 0
    result = CliRunner().invoke(cli, ["reproduce", "no-such-recipe", "--set", "epochs=1", "--dry-run"])
    assert "--set is deprecated; use --train-set" in result.output and result.exit_code != 0


def test_json_output_parses():
    import json

    for args in (["list", "tasks", "--json"], ["zoo", "list", "--json"], ["plugins", "--json"]):
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 0, (args, result.output)
        json.loads(result.stdout)
    shown = json.loads(CliRunner().invoke(cli, ["data", "show", "--task", "inverse", "-n", "2", "--json"]).stdout)
    assert shown["task"] == "inverse" and len(shown["samples"]) == 2
