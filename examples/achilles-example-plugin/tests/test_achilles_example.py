"""The example plugin's own tests: what a plugin author writes (see achilles' docs/plugins.md)."""

import json

import torch
from click.testing import CliRunner

import achilles
from achilles.cli.main import get_cli

#: what achilles passes to (or lets a user set on) every architecture factory
ARCHITECTURE_SETTINGS = ("vocab_size", "max_len", "n_layers", "d_model", "gamma", "backend")


def invoke(*args):
    """The achilles CLI with this plugin's command attached, as `achilles ...` runs it."""
    return CliRunner().invoke(get_cli(), [str(a) for a in args])


def test_every_hook_is_registered_and_listed():
    listing = invoke("list")
    assert listing.exit_code == 0, listing.output
    for name in ("example-successor", "example-mlp", "example-residual-norm"):
        assert name in listing.output
    plugins = invoke("plugins")
    assert "commands: example-samples" in plugins.output and "probes: example-residual-norm" in plugins.output


def test_the_command_runs_under_clirunner():
    result = invoke("example-samples", "-n", "2")
    assert result.exit_code == 0, result.output
    assert len(result.output.splitlines()) == 2 and "targets:" in result.output


def test_architecture_builds_without_arguments_and_rebuilds_from_its_config():
    model = achilles.create_model("example-mlp")
    assert set(ARCHITECTURE_SETTINGS) <= set(model.config)
    again = achilles.create_model("example-mlp", **model.config)
    assert again.config == model.config
    task = achilles.get_task("example-successor")
    built = achilles.create_model("example-mlp", vocab_size=task.vocab_size, max_len=task.seq_len)
    assert built(task.generate("test", n=2).tokens).shape == (2, task.seq_len, task.vocab_size)


def test_task_is_deterministic_in_its_seed_and_rebuilds_from_its_config():
    task = achilles.get_task("example-successor", vocab=12)
    a, b = task.generate("train", n=8, seed=3), task.generate("train", n=8, seed=3)
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.targets, b.targets)
    assert achilles.get_task("example-successor", **task.config).config == task.config


def test_train_then_probe_through_the_cli(tmp_path):
    run = tmp_path / "run"
    trained = invoke("train", "--arch", "example-mlp", "--task", "example-successor", "--epochs", 1,
                     "--train-samples", 256, "--eval-samples", 64, "--batch-size", 64, "--out", run, "--no-progress", "-q")
    assert trained.exit_code == 0, trained.output
    probed = invoke("probe", run, "--probe", "example-residual-norm", "--samples", 16)
    assert probed.exit_code == 0, probed.output
    result = json.loads((run / "probes" / "example-residual-norm" / "example-residual-norm.json").read_text())
    assert result["samples"] == 16 and set(result["headline"]) == {"norm resid.0"}


def test_an_unknown_probe_option_is_one_line():
    result = invoke("data", "show", "--task", "example-successor", "-n", 1)
    assert result.exit_code == 0
    probe = achilles.get_probe("example-residual-norm")
    model, task = achilles.create_model("example-mlp"), achilles.get_task("example-successor")
    try:
        probe.run(model, task, achilles.ProbeContext(out_dir="unused"), colour="red")
    except achilles.ConfigError as exc:
        assert "colour" in str(exc)
    else:
        raise AssertionError("an unknown option must be refused")


def test_the_recipe_reproduces_with_a_computed_verdict(tmp_path):
    result = invoke("reproduce", "example-successor-mlp", "--out", tmp_path / "out", "--workers", "0",
                    "--no-progress")
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    (claim,) = report["claims"]
    assert claim["id"] == "mlp-solves-successor" and claim["verdict"] == "held", claim
    assert claim["measurement"]["value"] is not None and report["complete"]
    assert "example-successor-mlp" in invoke("reproduce", "--list").output
