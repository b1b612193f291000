"""A seed is an independent replicate: by default run seed s trains and evaluates on data drawn
from s (recorded in run.json); --data-seed pins the data; old records (data seed 0) still work."""

import json

import pytest
import torch
from click.testing import CliRunner

import achilles
from achilles.cli.main import cli
from achilles.training.epoch_loop import members_data, training_data
from achilles.errors import AchillesError, ConfigError
from achilles.training.profiles import TrainSettings, settings_for
from achilles.runs.folder import recorded_data_seed
from achilles.runs.folder import RunFolder
from achilles.models.loading import load_run
from achilles.sweep import SweepOptions, make_spec, plan_cells, run_sweep, sweep_folder
from achilles.training.trainer import resume_run, start_run

import toy_plugin

TINY = dict(profile="quick", epochs=1, train_samples=64, eval_samples=16, batch_size=32, progress=False)
CLI_TINY = ["--arch", "toy-mixer", "--task", "toy-count", "--profile", "quick", "--epochs", "1", "--train-samples", "64",
            "--eval-samples", "16", "--batch-size", "32", "--no-progress", "-q"]


@pytest.fixture(autouse=True)
def toy():
    achilles.register_plugin(toy_plugin, "toy")


def _start(tmp_path, name, seed, **settings):
    return start_run("toy-mixer", "toy-count", out=tmp_path / name, seed=seed, **{**TINY, **settings})


def _record(path):
    return RunFolder(path).read_config()


def test_the_default_data_seed_is_derived_from_the_run_seed():
    base = settings_for("quick", {})
    assert base.data_seed is None
    assert base.resolved(3).data_seed == 3
    assert base.resolved(3).resolved(5).data_seed == 3  # resolved once: a recorded one is kept
    assert settings_for("quick", {}, data_seed=7).resolved(3).data_seed == 7
    with pytest.raises(ConfigError, match="data_seed"):
        settings_for("quick", {}, data_seed=-1)


def test_seeds_train_and_evaluate_on_their_own_samples(tmp_path):
    a, b = _start(tmp_path, "a", 0), _start(tmp_path, "b", 1)
    assert (a.settings.data_seed, b.settings.data_seed) == (0, 1)
    assert _record(a.run.path)["training"]["data_seed"] == 0
    assert _record(b.run.path)["training"]["data_seed"] == 1  # run.json says which data the run used
    (train_a, evals_a), (train_b, evals_b) = (training_data(t.task, t.settings, t.device) for t in (a, b))
    assert not torch.equal(train_a.tokens, train_b.tokens)
    for split in evals_a:
        assert not torch.equal(evals_a[split].tokens, evals_b[split].tokens), split
    # an ensemble of the two gives each member its own data, the data its lone run would draw
    (ea, _), (eb, _) = members_data([a, b], a.device)
    assert torch.equal(ea.tokens, train_a.tokens) and torch.equal(eb.tokens, train_b.tokens)
    for t in (a, b):
        t.close()


def test_a_pinned_data_seed_gives_every_seed_the_same_data(tmp_path):
    a, b = _start(tmp_path, "a", 0, data_seed=7), _start(tmp_path, "b", 1, data_seed=7)
    assert _record(a.run.path)["training"]["data_seed"] == _record(b.run.path)["training"]["data_seed"] == 7
    (train_a, evals_a), (train_b, evals_b) = (training_data(t.task, t.settings, t.device) for t in (a, b))
    assert torch.equal(train_a.tokens, train_b.tokens)
    assert all(torch.equal(evals_a[s].tokens, evals_b[s].tokens) for s in evals_a)
    da, db = members_data([a, b], a.device)
    assert da is db  # one copy for members of one data seed
    for t in (a, b):
        t.close()


def test_cli_data_seed_is_recorded_and_resume_refuses_another(tmp_path):
    runner = CliRunner()
    run = tmp_path / "run"
    done = runner.invoke(cli, ["train", *CLI_TINY, "--seed", "1", "--data-seed", "7", "--out", str(run)])
    assert done.exit_code == 0, done.output
    assert _record(run)["training"]["data_seed"] == 7 and _record(run)["seed"] == 1
    RunFolder(run).update_config(status="interrupted")
    refused = runner.invoke(cli, ["train", "--resume", str(run), "--data-seed", "3"])
    assert refused.exit_code == 2 and "cannot honour --data-seed 3 (the run's: 7)" in refused.output
    same = runner.invoke(cli, ["train", "--resume", str(run), "--data-seed", "7", "--no-progress", "-q"])
    assert same.exit_code == 0, same.output
    default = runner.invoke(cli, ["train", *CLI_TINY, "--seed", "2", "--out", str(tmp_path / "s2")])
    assert default.exit_code == 0, default.output
    assert _record(tmp_path / "s2")["training"]["data_seed"] == 2
    assert "--data-seed" in runner.invoke(cli, ["train", "--help"]).output
    assert "--data-seed" in runner.invoke(cli, ["sweep", "--help"]).output
    assert "--data-seed" in runner.invoke(cli, ["reproduce", "--help"]).output


def test_eval_draws_the_runs_own_data_seed_by_default(tmp_path):
    trainer = _start(tmp_path, "r", 3)
    trainer.fit()
    runner = CliRunner()
    default = json.loads(runner.invoke(cli, ["eval", str(tmp_path / "r"), "--json"]).output)
    own = json.loads(runner.invoke(cli, ["eval", str(tmp_path / "r"), "--json", "--seed", "3"]).output)
    assert default["metrics"] == own["metrics"]
    final = _record(tmp_path / "r")["final_metrics"]
    assert default["metrics"]["test"]["acc"] == final["test"]["acc"]  # what training evaluated on


def test_old_runs_that_record_data_seed_0_resume_and_load(tmp_path):
    trainer = _start(tmp_path, "old", 2, epochs=2)
    trainer.close()
    record = _record(tmp_path / "old")
    RunFolder(tmp_path / "old").update_config(training={**record["training"], "data_seed": 0}, status="interrupted")
    resumed = resume_run(tmp_path / "old", progress=False)
    assert resumed.settings.data_seed == 0 and resumed.seed == 2
    assert resumed.fit().status == "finished"
    assert _record(tmp_path / "old")["training"]["data_seed"] == 0
    assert load_run(tmp_path / "old").config["training"]["data_seed"] == 0
    assert recorded_data_seed(_record(tmp_path / "old")) == 0
    assert recorded_data_seed({"seed": 4, "training": {"data_seed": None}}) == 4
    assert recorded_data_seed({}) == 0


def test_a_sweep_rerun_reuses_its_finished_cells(tmp_path):
    def sweep(**kw):
        spec = make_spec("toy-mixer", "toy-count", {"gamma": [0.5]}, 2, "quick", epochs=1, train_samples=64,
                         eval_samples=16, batch_size=32, **kw)
        return spec, run_sweep(spec, SweepOptions(folder=sweep_folder(spec, None, tmp_path), workers=0,
                                                  progress=False, threads=1))

    spec, first = sweep()
    assert first.trained == 2 and not first.errors
    cells = plan_cells(spec, first.path)
    assert [_record(c.path)["training"]["data_seed"] for c in cells] == [0, 1]
    _, again = sweep()
    assert again.path == first.path and again.trained == 0 and again.skipped == 2
    pinned_spec, pinned = sweep(data_seed=0)  # pinned data: another sweep, in another folder
    assert pinned.path != first.path and pinned.trained == 2
    assert [_record(c.path)["training"]["data_seed"] for c in plan_cells(pinned_spec, pinned.path)] == [0, 0]


def test_a_sweep_refuses_a_cell_trained_on_another_data_seed(tmp_path):
    """A run from before per-seed data (seed 1 on data seed 0) is never taken as an independent replicate."""
    spec = make_spec("toy-mixer", "toy-count", {"gamma": [0.5]}, 2, "quick", epochs=1, train_samples=64,
                     eval_samples=16, batch_size=32)
    folder = sweep_folder(spec, "old", tmp_path)
    run_sweep(spec, SweepOptions(folder=folder, workers=0, progress=False, threads=1))
    cell = plan_cells(spec, folder)[1]
    record = _record(cell.path)
    RunFolder(cell.path).update_config(training={**record["training"], "data_seed": 0})
    with pytest.raises(AchillesError, match="data seed 0 != 1"):
        plan_cells(spec, folder)


def test_the_sweep_identity_names_the_data_seed():
    a = make_spec("toy-mixer", "toy-count", {"gamma": [0.5]}, 2, "quick")
    b = make_spec("toy-mixer", "toy-count", {"gamma": [0.5]}, 2, "quick", data_seed=0)
    assert a.identity()["data_seed"] is None and b.identity()["data_seed"] == 0
    assert a.digest() != b.digest()
    assert TrainSettings.from_dict({**settings_for("quick", {}).to_dict(), "data_seed": 0}).data_seed == 0
