"""Training runs: resume to identical weights, NaN stops, run-folder contents, profiles."""

import json
import math

import pytest
import torch
from click.testing import CliRunner

import achilles
from achilles.cli.main import cli
from achilles.training.profiles import settings_for
from achilles.runs.folder import RunFolder
from achilles.models.loading import load_run
from achilles.training.trainer import resume_run, start_run

import toy_plugin

TINY = dict(profile="quick", epochs=3, train_samples=256, eval_samples=32, batch_size=32, progress=False)


@pytest.fixture(autouse=True)
def toy():
    achilles.register_plugin(toy_plugin, "toy")


def weights(path):
    return load_run(path).model.state_dict()


def test_interrupted_run_resumes_to_the_same_weights(tmp_path):
    straight = start_run("toy-mixer", "toy-count", out=tmp_path / "straight", seed=3, **TINY).fit()
    assert straight.status == "finished"

    trainer = start_run("toy-mixer", "toy-count", out=tmp_path / "cut", seed=3, **TINY)
    calls = {"n": 0}

    def interrupt_in_epoch_two(value, site):
        calls["n"] += 1
        if calls["n"] == 8 + 3:  # 8 steps per epoch: the 3rd step of epoch 2
            raise KeyboardInterrupt

    with trainer.model.hooks(edit={"resid.0": interrupt_in_epoch_two}):
        cut = trainer.fit()
    assert cut.status == "interrupted" and cut.epochs_completed == 1
    assert RunFolder(tmp_path / "cut").read_config()["status"] == "interrupted"

    resumed = resume_run(tmp_path / "cut", progress=False)
    assert resumed.epoch == 1
    assert resumed.fit().status == "finished"
    a, b = weights(tmp_path / "straight"), weights(tmp_path / "cut")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [r["epoch"] for r in RunFolder(tmp_path / "cut").read_metrics()] == [1, 2, 3]


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    trainer = start_run("toy-mixer", "toy-count", out=tmp_path / "run", **TINY)
    calls = {"n": 0}

    def poison_in_epoch_two(value, site):
        if not trainer.model.training:  # the evaluations stay finite
            return value
        calls["n"] += 1
        return value * float("nan") if calls["n"] > 8 else value

    with trainer.model.hooks(edit={"resid.1": poison_in_epoch_two}):
        result = trainer.fit()
    assert result.status == "failed" and result.epochs_completed == 1
    assert "loss became nan at epoch 2" in result.reason and "last good checkpoint (epoch 1)" in result.reason
    run = RunFolder(tmp_path / "run")
    assert run.read_config()["status"] == "failed" and run.read_config()["epochs_completed"] == 1
    state = weights(tmp_path / "run")  # the kept weights are loadable, verified and finite
    assert all(torch.isfinite(v).all() for v in state.values())


def test_non_finite_evaluation_fails_the_run_and_keeps_the_last_finite_checkpoint(tmp_path):
    trainer = start_run("toy-mixer", "toy-count", out=tmp_path / "run", **TINY)
    evaluations = {"n": 0}

    def poison_second_evaluation(value, site):
        if trainer.model.training:
            return value
        evaluations["n"] += 1  # 2 splits per evaluation, one forward each
        return value * float("nan") if evaluations["n"] > 2 else value

    with trainer.model.hooks(edit={"resid.1": poison_second_evaluation}):
        result = trainer.fit()
    assert result.status == "failed" and "loss is nan after epoch 2" in result.reason
    run = RunFolder(tmp_path / "run")
    config = run.read_config()
    assert config["status"] == "failed" and config["epochs_completed"] == 1 and "nan" in config["failure"]
    assert [r["epoch"] for r in run.read_metrics()] == [1]  # the non-finite epoch is not recorded
    state = json.loads((run.path / "checkpoint" / "state.json").read_text())
    assert state["epoch"] == 1
    from achilles.runs.files import load_tensors
    kept = load_tensors(run.path / "checkpoint" / state["model"], state["model_sha256"])
    assert all(torch.equal(kept[k], v) for k, v in weights(run.path).items())  # model.safetensors = epoch 1


def test_cli_train_with_a_diverging_lr_ends_failed(tmp_path):
    result = CliRunner().invoke(cli, ["train", "--arch", "toy-mixer", "--task", "toy-count", "--epochs", "2",
                                      "--train-samples", "128", "--eval-samples", "16", "--batch-size", "32",
                                      "--lr", "1e30", "--out", str(tmp_path / "run"), "--no-progress"])
    assert result.exit_code == 1, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "loss became nan" in errors[0] and "Traceback" not in result.output
    run = RunFolder(tmp_path / "run")
    config = run.read_config()
    assert config["status"] == "failed" and config["epochs_completed"] == 0
    from achilles.runs.files import file_sha256, load_tensors
    assert file_sha256(run.path / "model.safetensors") == config["weights_sha256"]
    initial = load_tensors(run.path / "init.safetensors")  # the last finite checkpoint: epoch 0
    assert all(torch.equal(initial[k], v) for k, v in weights(run.path).items())


def test_run_folder_holds_config_weights_metrics_and_card(tmp_path):
    result = start_run("toy-mixer", "toy-count", out=tmp_path / "run", **TINY).fit()
    from achilles.training.trainer import finalize_run
    finalize_run(result)
    run = RunFolder(result.path)
    config = run.read_config()
    assert config["status"] == "finished" and config["epochs_completed"] == 3
    assert config["training"]["profile"] == "quick" and config["training"]["lr_peak"] == 1e-3
    assert set(config["final_metrics"]) == {"train", "test"}
    records = run.read_metrics()
    assert [r["epoch"] for r in records] == [1, 2, 3]
    assert all({"loss", "lr", "metrics"} <= set(r) for r in records)
    assert (run.path / "training_curves.png").stat().st_size > 1000
    assert (run.path / "init.safetensors").is_file()
    rebuilt = load_run(run.path)  # config.json alone rebuilds model and task
    assert rebuilt.model.config == config["model"] and rebuilt.task.config == config["task_config"]


def test_run_json_records_the_machine_and_software_and_the_card_says_them(tmp_path):
    """Retrains repeat exactly on one machine only: run.json names what a second machine must match."""
    import json
    import platform
    from achilles.training.precision import cpu_description
    from achilles.zoo.card import render_card

    trainer = start_run("toy-mixer", "toy-count", out=tmp_path / "run", **TINY)
    environment = json.loads((tmp_path / "run" / "run.json").read_text())["environment"]
    assert environment == {"python": platform.python_version(), "torch": torch.__version__,
                           "cpu": cpu_description()["model"], "torch_threads": torch.get_num_threads()}
    trainer.fit()
    card = render_card(tmp_path / "run")
    assert f"{torch.get_num_threads()} torch thread(s), torch {torch.__version__}" in card


def test_run_json_records_which_compute_path_trained_the_model(tmp_path):
    """Mamba1's compiled and eager scans differ in the last bits: a finished run says which trained it."""
    import json

    start_run("mamba1", "composite", out=tmp_path / "run", profile="quick", model_config={"d_model": 8},
              epochs=1, train_samples=32, eval_samples=8, batch_size=16, progress=False).fit()
    environment = json.loads((tmp_path / "run" / "run.json").read_text())["environment"]
    assert environment["compute_paths"] == ["Mamba1Layer: scan"]  # tiny: the eager scan


def test_existing_run_is_not_overwritten(tmp_path):
    start_run("toy-mixer", "toy-count", out=tmp_path / "run", **TINY).fit()
    with pytest.raises(achilles.AchillesError, match="already exists.*--overwrite"):
        start_run("toy-mixer", "toy-count", out=tmp_path / "run", **TINY)


def test_paper_profile_follows_appendix_d():
    s = settings_for("paper", {"batch_size": 2048})
    assert (s.epochs, s.batch_size, s.lr_start, s.lr_peak, s.warmup_epochs) == (200, 2048, 1e-5, 25e-5, 10)
    assert (s.betas, s.eps, s.weight_decay, s.grad_clip) == ((0.9, 0.999), 1e-8, 1e-2, 1.0)
    assert math.isclose(s.lr_at(0), 1e-5) and math.isclose(s.lr_at(10), 25e-5)
    assert math.isclose(s.lr_at(105), (1e-5 + 25e-5) / 2) and math.isclose(s.lr_at(200), 1e-5)
    assert s.lr_at(5) < s.lr_at(6) and s.lr_at(150) > s.lr_at(151)


def test_impossible_settings_name_the_setting():
    with pytest.raises(achilles.ConfigError, match="batch_size"):
        settings_for("quick", {}, batch_size=0)
    with pytest.raises(achilles.ConfigError, match="profile"):
        settings_for("fast", {})


def test_cli_train_says_which_profile_and_prints_a_metrics_table(tmp_path):
    result = CliRunner().invoke(cli, ["train", "--arch", "toy-mixer", "--task", "toy-count", "--epochs", "2",
                                      "--train-samples", "128", "--eval-samples", "16", "--batch-size", "32",
                                      "--out", str(tmp_path / "run"), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "Profile: quick (no GPU found" in result.output
    assert "not the paper's" in result.output
    assert "metric" in result.output and "test" in result.output and "Done:" in result.output
    assert "epoch 2/2  loss " in result.output  # the trainer's log lines, shown by the CLI
    evaluated = CliRunner().invoke(cli, ["eval", str(tmp_path / "run"), "--json", "--split", "test"])
    assert evaluated.exit_code == 0, evaluated.output
    assert set(json.loads(evaluated.output)["metrics"]) == {"test"}


def test_cli_errors_are_one_line(tmp_path):
    r = CliRunner().invoke(cli, ["train", "--arch", "toy-mixr", "--task", "toy-count", "--out", str(tmp_path / "x")])
    assert r.exit_code == 2 and "did you mean: toy-mixer" in r.output and "Traceback" not in r.output
    r = CliRunner().invoke(cli, ["train", "--arch", "toy-mixer", "--task", "toy-count", "--batch-size", "0",
                                 "--out", str(tmp_path / "y")])
    assert r.exit_code == 2 and "batch_size" in r.output
    r = CliRunner().invoke(cli, ["train", "--resume", str(tmp_path / "nothing")])
    assert r.exit_code == 2 and "not a run folder" in r.output
