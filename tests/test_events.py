"""Trainer events reach plugins through the on_trainer_event hook; a failing listener never stops
training; the first-party TensorBoard writer logs every epoch into RUN/tensorboard/."""

import logging

import pytest
from click.testing import CliRunner

import achilles
from achilles.training import events
from achilles.cli.main import cli
from achilles.training.ensemble import EnsembleTrainer
from achilles.training.trainer import start_run

import toy_plugin

TINY = dict(profile="quick", epochs=2, train_samples=64, eval_samples=16, batch_size=32, progress=False)
TRAIN = ["train", "--arch", "toy-mixer", "--task", "toy-count", "--epochs", "2", "--train-samples", "64",
         "--eval-samples", "16", "--batch-size", "32", "--no-progress"]


@pytest.fixture(autouse=True)
def toy():
    achilles.register_plugin(toy_plugin, "toy")


class Recorder:
    def __init__(self):
        self.seen = []

    @achilles.hookimpl
    def on_trainer_event(self, event):
        self.seen.append(event)


class Broken:
    calls = 0

    @achilles.hookimpl
    def on_trainer_event(self, event):
        Broken.calls += 1
        raise RuntimeError("listener bug")


def test_a_run_emits_start_epochs_checkpoints_and_end(tmp_path):
    recorder = Recorder()
    achilles.register_plugin(recorder, "recorder")
    result = start_run("toy-mixer", "toy-count", out=tmp_path / "run", **TINY).fit()
    kinds = [e.kind for e in recorder.seen]
    assert kinds == ["run_started", "epoch_ended", "checkpoint_saved", "epoch_ended", "checkpoint_saved",
                     "run_ended"]
    started, first_epoch, end = recorder.seen[0], recorder.seen[1], recorder.seen[-1]
    assert isinstance(started, events.RunStarted) and started.epochs == 2 and started.arch == "toy-mixer"
    assert first_epoch.epoch == 1 and set(first_epoch.record["metrics"]) == {"train", "test"}
    assert all(e.run == result.path and e.task == "toy-count" for e in recorder.seen)
    assert end.status == "finished" and end.final_metrics == result.final_metrics


def test_a_failing_member_emits_run_failed(tmp_path):
    recorder = Recorder()
    achilles.register_plugin(recorder, "recorder")
    trainers = [start_run("toy-mixer", "toy-count", out=tmp_path / f"m{s}", seed=s, lr_peak=1e30, **TINY)
                for s in (0, 1)]
    EnsembleTrainer(trainers, method="loop", progress=False).fit()
    failed = [e for e in recorder.seen if isinstance(e, events.RunFailed)]
    assert sorted(e.run.name for e in failed) == ["m0", "m1"] and all("nan" in e.reason for e in failed)


def test_a_broken_listener_is_reported_once_and_training_goes_on(tmp_path, caplog):
    achilles.register_plugin(Broken(), "broken")
    Broken.calls = 0
    result = start_run("toy-mixer", "toy-count", out=tmp_path / "run", **TINY).fit()
    assert result.status == "finished" and Broken.calls == 1  # disabled for the rest of the run (issue 19)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "'broken'" in warnings[0] and "listener bug" in warnings[0]


def test_train_log_tensorboard_writes_event_files_that_read_back(tmp_path):
    pytest.importorskip("tensorboard", reason='the tensorboard extra: pip install "achilles[tensorboard]"')
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    result = CliRunner().invoke(cli, TRAIN + ["--out", str(tmp_path / "run"), "--log", "tensorboard"])
    assert result.exit_code == 0, result.output
    folder = tmp_path / "run" / "tensorboard"
    assert any(f.name.startswith("events.out.tfevents") for f in folder.iterdir())
    board = EventAccumulator(str(folder))
    board.Reload()
    tags = board.Tags()["scalars"]
    assert {"training/loss", "training/lr", "test/acc", "train/acc", "test/loss"} <= set(tags)
    metrics = achilles.load(tmp_path / "run").config["final_metrics"]
    test_acc = board.Scalars("test/acc")
    assert [s.step for s in test_acc] == [1, 2]
    assert test_acc[-1].value == pytest.approx(metrics["test"]["acc"])


def test_log_tensorboard_without_the_package_is_one_line(tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_tensorboard(name, globals=None, locals=None, fromlist=(), level=0):
        if level == 0 and name.split(".")[0] == "tensorboard" or name.startswith("torch.utils.tensorboard"):
            raise ImportError("no tensorboard")
        return real_import(name, globals, locals, fromlist, level)

    monkeypatch.setattr(builtins, "__import__", no_tensorboard)
    result = CliRunner().invoke(cli, TRAIN + ["--out", str(tmp_path / "run"), "--log", "tensorboard"])
    assert result.exit_code == 2, result.output
    assert result.output.strip() == 'Error: --log tensorboard needs TensorBoard: pip install "achilles[tensorboard]"'
    assert not (tmp_path / "run").exists()
