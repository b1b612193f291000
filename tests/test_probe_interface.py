"""The probe interface as a third-party plugin sees it: declared options become `achilles probe`
flags and --set settings, the probe receives a ProbeContext, and declared task capabilities are
checked. The probe and task here come from tests/toy_plugin.py, so nothing first-party is named."""

import json

import pytest
import torch
from click.testing import CliRunner

import achilles
from achilles import ConfigError, ProbeContext, ProbeOption
from achilles.cli.main import cli

import toy_plugin
from hub_fixtures import make_run


@pytest.fixture
def toy_run(tmp_path):
    achilles.register_plugin(toy_plugin, "toy")
    return make_run(tmp_path / "run")


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def echoed(run_dir):
    return json.loads((run_dir / "probes" / "toy-echo" / "echo.json").read_text())


def test_declared_options_are_flags_and_settings_converted_to_their_type(toy_run):
    result = invoke("probe", "--depth", 3, toy_run, "--probe", "toy-echo", "--label", 7,
                    "--probe-set", "anything=[1, 2]", "--probe-set", "verbose=true", "--device", "cpu",
                    "--probe-set", "device=gpu0")
    assert result.exit_code == 0, result.output
    received = echoed(toy_run)
    assert received["options"] == {"depth": 3, "label": "7", "verbose": True, "anything": [1, 2], "device": "gpu0"}
    assert received["run_dir"] == str(toy_run) and received["arch"] == "toy-mixer" and received["device"] == "cpu"
    assert "the options and context received" in result.output and "depth" in result.output


def test_a_flag_wins_over_set_and_defaults_fill_the_rest(toy_run):
    result = invoke("probe", toy_run, "--probe=toy-echo", "--probe-set", "depth=2", "--depth", 5)
    assert result.exit_code == 0, result.output
    assert echoed(toy_run)["options"] == {"depth": 5, "label": "plain", "verbose": False, "anything": None,
                                          "device": "none"}


def test_help_lists_the_chosen_probes_options():
    achilles.register_plugin(toy_plugin, "toy")
    result = invoke("probe", "--probe", "toy-echo", "--help")
    assert result.exit_code == 0, result.output
    own, probe_part = result.output.split("Options of probe 'toy-echo'")
    assert "--depth INT" in probe_part and "how deep to look" in probe_part and "[default: 1]" in probe_part
    assert "--device" in own and "--device" not in probe_part  # the command's flag keeps its meaning
    assert "--depth" not in invoke("probe", "--help").output


@pytest.mark.parametrize("args, message", [
    (["--depth", "x"], "invalid setting depth: must be an integer, got 'x'"),
    (["--probe-set", "verbose=maybe"], "invalid setting verbose: must be true or false"),
    (["--dpth", "3"], "probe 'toy-echo' has no such option (options: anything, depth, device, label, verbose)"),
    (["--probe-set", "dpth=3"], "probe 'toy-echo' has no such option"),
])
def test_bad_options_fail_in_one_line_before_the_run_is_loaded(tmp_path, args, message):
    achilles.register_plugin(toy_plugin, "toy")
    result = invoke("probe", tmp_path / "no-such-run", "--probe", "toy-echo", *args)
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output


def test_unknown_probe_fails_before_its_flags_are_parsed(tmp_path):
    result = invoke("probe", tmp_path, "--probe", "toy-ech", "--depth", 3)
    assert result.exit_code == 2 and "unknown probe 'toy-ech'" in result.output


def test_check_names_the_missing_task_capability_both_ways():
    achilles.register_plugin(toy_plugin, "toy")
    model = achilles.create_model("toy-mixer")
    with pytest.raises(achilles.AchillesError,
                       match="probe 'toy-echo' needs a task with capability 'counting', which task 'inverse' does not"):
        achilles.get_probe("toy-echo").check(model, achilles.get_task("inverse"))
    achilles.get_probe("toy-echo").check(model, achilles.get_task("toy-count"))  # declared: passes
    first_party = achilles.create_model("mamba2", n_layers=1, d_model=16, d_state=16)
    with pytest.raises(achilles.AchillesError, match="capability 'pair_shift', which task 'toy-count' does not"):
        achilles.get_probe("blocking").check(first_party, achilles.get_task("toy-count"))


def test_probe_called_from_python_receives_its_context(tmp_path):
    achilles.register_plugin(toy_plugin, "toy")
    probe, task = achilles.get_probe("toy-echo"), achilles.get_task("toy-count")
    model = achilles.create_model("toy-mixer")
    result = probe.run(model, task, ProbeContext(tmp_path / "a", run_dir=tmp_path, config={"arch": "x"}), depth=2)
    assert result["run_dir"] == str(tmp_path) and result["arch"] == "x" and result["options"]["depth"] == 2
    assert probe.run(model, task, ProbeContext(tmp_path / "b"))["run_dir"] == "None"  # no run folder
    assert (tmp_path / "a" / "echo.json").is_file() and (tmp_path / "b" / "echo.json").is_file()
    with pytest.raises(ConfigError, match="probe 'toy-echo' has no such option"):
        probe.run(model, task, ProbeContext(tmp_path), dpth=2)


def test_option_conversion():
    assert ProbeOption("n", int).convert("8") == 8 and ProbeOption("n", int).convert(8) == 8
    assert ProbeOption("x", float).convert(1) == 1.0 and isinstance(ProbeOption("x", float).convert(1), float)
    assert ProbeOption("b", bool).convert("False") is False and ProbeOption("b", bool).convert(True) is True
    assert ProbeOption("s", str).convert(43) == "43" and ProbeOption("v", None).convert([1]) == [1]
    assert ProbeOption("n", int).convert(None) is None  # None: the probe's own default behaviour
    for option, value in [(ProbeOption("n", int), True), (ProbeOption("n", int), 1.5), (ProbeOption("n", int), "1.5"),
                          (ProbeOption("b", bool), 1), (ProbeOption("s", str), [1]), (ProbeOption("x", float), "x")]:
        with pytest.raises(ConfigError, match=f"invalid setting {option.name}:"):
            option.convert(value)


def test_a_declaration_with_a_bad_name_or_type_is_refused():
    with pytest.raises(ValueError, match="identifier"):
        ProbeOption("summary-samples", int)
    with pytest.raises(ValueError, match="type must be"):
        ProbeOption("layers", list)


def test_context_normalises_its_fields(tmp_path):
    context = ProbeContext(str(tmp_path), run_dir=str(tmp_path), device="cpu")
    assert context.out_dir == tmp_path and context.run_dir == tmp_path and context.device == torch.device("cpu")
    assert ProbeContext(tmp_path).run_dir is None and ProbeContext(tmp_path).config == {}
