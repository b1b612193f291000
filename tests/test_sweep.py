"""Sweeps: grid syntax, resumable cells, aggregation, heatmaps, the local and Ray executors."""

import csv
import json
import os

import pytest
from click.testing import CliRunner

import achilles
from achilles.cli.main import cli
from achilles.errors import AchillesError, ConfigError, UnknownNameError
from achilles.runs.folder import RunFolder
from achilles.models.loading import load_run
from achilles.sweep import (SweepOptions, SweepSpec, aggregate, make_spec, make_units, parse_grid, parse_range,
                            parse_seeds, plan_cells, run_sweep, sweep_folder)
from achilles.training.trainer import start_run

import toy_plugin

TINY = dict(epochs=2, train_samples=64, eval_samples=16, batch_size=32)
GRID = {"gamma": [0.5, 1.0], "n_layers": [1]}
QUIET = dict(progress=False, threads=1)


@pytest.fixture(autouse=True)
def toy():
    achilles.register_plugin(toy_plugin, "toy")


def sweep(tmp_path, grid=GRID, seeds=2, name=None, **kw):
    """The toy sweep in ``tmp_path``; ``kw`` holds training overrides and SweepOptions fields."""
    option_names = set(SweepOptions.__dataclass_fields__)
    options = {"workers": 0, **QUIET, **{k: v for k, v in kw.items() if k in option_names}}
    spec = make_spec("toy-mixer", "toy-count", grid, seeds, "quick",
                     **{**TINY, **{k: v for k, v in kw.items() if k not in option_names}})
    return run_sweep(spec, SweepOptions(folder=sweep_folder(spec, name, tmp_path), **options))


# -- grid syntax --------------------------------------------------------------------------------
def test_ranges_are_inclusive_and_float_safe():
    assert parse_range("gamma", "0.5:1.0:0.1") == [0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
    assert parse_range("n_layers", "2:6:1") == [2, 3, 4, 5, 6]
    assert parse_range("n_layers", "2:6") == [2, 3, 4, 5, 6]
    assert parse_range("gamma", "1.0:0.5:-0.25") == [1.0, 0.75, 0.5]
    assert parse_range("gamma", "0.1:0.35:0.1") == [0.1, 0.2, 0.3]


def test_grid_values_take_the_settings_types():
    grid = parse_grid(["gamma=1,0.5", "n_layers=2,3.0", "task.length=5:6:1", "train.lr_peak=1e-3"],
                      "toy-mixer", "toy-count")
    assert grid == {"gamma": [1.0, 0.5], "n_layers": [2, 3], "task.length": [5, 6], "train.lr_peak": [0.001]}
    assert isinstance(grid["gamma"][0], float) and isinstance(grid["n_layers"][1], int)
    assert parse_grid({"gamma": 0.5, "n_layers": [1, 2]}, "toy-mixer", "toy-count") == \
        {"gamma": [0.5], "n_layers": [1, 2]}
    assert parse_seeds(3) == [0, 1, 2] and parse_seeds("3") == [0, 1, 2] and parse_seeds("0,4,7") == [0, 4, 7]


@pytest.mark.parametrize("spec, message", [
    ("gama=0.5:1.0:0.1", "unknown grid setting .*'gama'.*did you mean: gamma"),
    ("task.lenght=4,5", "did you mean: task.length"),
    ("gamma=0.5:1.0:0", "step of '0.5:1.0:0' is 0"),
    ("gamma=1.0:0.5:0.1", "range '1.0:0.5:0.1' is empty"),
    ("gamma=a:b:0.1", "start 'a' of the range is not a number"),
    ("gamma", "expected NAME=VALUES"),
    ("seed=0,1", "use --seeds"),
    ("n_layers=1.5,2", "must be a whole number"),
    ("gamma=0.5,0.5", "repeats a value"),
])
def test_bad_grids_fail_with_one_clear_line(spec, message):
    with pytest.raises((ConfigError, UnknownNameError), match=message):
        parse_grid([spec], "toy-mixer", "toy-count")


def test_cli_reports_a_bad_grid_in_one_line():
    result = CliRunner().invoke(cli, ["sweep", "--arch", "toy-mixer", "--task", "toy-count",
                                      "--grid", "gama=0.5:1.0:0.1"])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "did you mean: gamma" in lines[0]
    result = CliRunner().invoke(cli, ["sweep", "--arch", "toy-mixer", "--task", "toy-count", "--grid", "gamma=1:0"])
    assert result.exit_code == 2 and "is empty" in result.output


@pytest.mark.parametrize("bad, setting", [
    (dict(executor="slurm"), "--executor"), (dict(workers=-1), "--workers"), (dict(threads=0), "--threads"),
    (dict(max_ensemble=0), "--max-ensemble"), (dict(ensemble_method="fast"), "--ensemble-method"),
    (dict(address="auto"), "--address"), (dict(gpus_per_unit=-1.0), "--ray-gpus"),
])
def test_sweep_options_are_checked_when_made(bad, setting):
    with pytest.raises(ConfigError) as refused:
        SweepOptions(**bad)
    assert refused.value.setting == setting


# -- a sweep end to end (in-process) ------------------------------------------------------------
def test_sweep_trains_aggregates_draws_and_resumes(tmp_path):
    result = sweep(tmp_path, ensemble=True)
    folder = result.path
    assert folder.parent == tmp_path and folder.name.startswith("toy-mixer.toy-count-")
    assert result.trained == 4 and result.skipped == 0 and not result.errors
    spec = json.loads((folder / "sweep.json").read_text())
    assert spec["grid"] == GRID and spec["seeds"] == [0, 1] and spec["profile"] == "quick"

    rows = list(csv.DictReader(open(folder / "results.csv")))
    assert [(r["gamma"], r["n_layers"], r["seed"]) for r in rows] == \
        [("0.5", "1", "0"), ("0.5", "1", "1"), ("1.0", "1", "0"), ("1.0", "1", "1")]
    assert {r["status"] for r in rows} == {"finished"} and {r["epochs"] for r in rows} == {"2"}
    assert "test.acc" in rows[0] and "test.loss" in rows[0]
    assert rows[0]["run"] == "toy-mixer.toy-count-l1-g0.5-s0-quick"
    for row in rows:  # each cell is an ordinary run folder that loads like any run
        run = load_run(folder / row["run"])
        assert run.config["seed"] == int(row["seed"]) and run.config["model"]["gamma"] == float(row["gamma"])
        assert float(row["test.acc"]) == run.config["final_metrics"]["test"]["acc"]
    assert result.figures == [str(folder / "phase_acc.png")]
    assert 0 < (folder / "phase_acc.png").stat().st_size < 200_000

    again = sweep(tmp_path)  # the same sweep again: everything is done
    assert again.path == folder and again.trained == 0 and again.skipped == 4
    more = sweep(tmp_path, seeds=3)  # more seeds: same folder, only the new cells train
    assert more.path == folder and more.trained == 2 and more.skipped == 4
    assert len(list(csv.DictReader(open(folder / "results.csv")))) == 6


def test_task_settings_given_as_text_resume_the_runs_they_recorded(tmp_path):
    """mqar records ``ngrams="K1V1,K1V2"`` as a list: the same sweep again reuses those runs."""
    small = {"vocab_size": 16, "length": 32, "n_pairs": 2, "ngrams": "K1V1,K1V2", "test_ngrams": "K1V1"}

    def mqar_sweep():
        spec = make_spec("toy-mixer", "mqar", {}, 1, "quick", task_config=small, **TINY)
        return run_sweep(spec, SweepOptions(folder=sweep_folder(spec, None, tmp_path), workers=0, **QUIET))

    first = mqar_sweep()
    assert first.trained == 1 and not first.errors
    again = mqar_sweep()
    assert again.trained == 0 and again.skipped == 1


def test_interrupted_cell_resumes_and_failed_cell_is_kept(tmp_path):
    spec = SweepSpec("toy-mixer", "toy-count", "quick", {"gamma": [0.5]}, [0, 1], settings=dict(TINY))
    folder = tmp_path / "s"
    cut, failed = plan_cells(spec, folder)
    trainer = start_run("toy-mixer", "toy-count", out=cut.path, seed=0, model_config={"gamma": 0.5},
                        profile="quick", progress=False, **TINY)
    calls = {"n": 0}

    def interrupt_in_epoch_two(value, site):
        calls["n"] += 1
        if calls["n"] == 3:  # 2 steps per epoch: the first step of epoch 2
            raise KeyboardInterrupt
    with trainer.model.hooks(edit={"resid.0": interrupt_in_epoch_two}):
        assert trainer.fit().status == "interrupted"
    start_run("toy-mixer", "toy-count", out=failed.path, seed=1, model_config={"gamma": 0.5}, profile="quick",
              progress=False, **TINY)
    RunFolder(failed.path).update_config(status="failed")

    result = run_sweep(spec, SweepOptions(folder=folder, workers=0, **QUIET))
    assert result.trained == 1 and result.skipped == 1
    assert [r["epoch"] for r in RunFolder(cut.path).read_metrics()] == [1, 2]
    assert [r["status"] for r in result.rows] == ["finished", "failed"]


def test_a_diverging_cell_counts_as_failed_and_is_not_retried(tmp_path, caplog):
    grid = {"train.lr_peak": [1e-3, 1e30]}  # diverges (an infinite lr is refused up front)
    result = sweep(tmp_path, grid=grid, seeds=1)
    assert (result.trained, result.failed, result.errors) == (1, 1, [])
    assert any("lr_peak1e+30" in m and "nan" in m for m in caplog.messages)
    assert [r["status"] for r in result.rows] == ["finished", "failed"]
    again = sweep(tmp_path, grid=grid, seeds=1)
    assert (again.trained, again.failed, again.skipped) == (0, 0, 2)


def test_a_named_sweep_refuses_other_settings(tmp_path):
    sweep(tmp_path, name="mine", seeds=1)
    with pytest.raises(AchillesError, match="another settings"):
        sweep(tmp_path, name="mine", seeds=1, epochs=3)
    with pytest.raises(AchillesError, match="sweeps gamma, n_layers, not gamma"):
        sweep(tmp_path, name="mine", grid={"gamma": [0.5]}, seeds=1)


def test_a_running_sweep_is_locked(tmp_path):
    from filelock import FileLock

    folder = tmp_path / "toy-mixer.toy-count-locked"
    folder.mkdir()
    with FileLock(folder / ".sweep.lock"):  # another driver holds the sweep
        with pytest.raises(AchillesError, match="is being run by another process") as refused:
            sweep(tmp_path, name="locked")
        assert "\n" not in str(refused.value)
    assert not (folder / "sweep.json").exists()  # the refused driver wrote nothing
    (folder / ".sweep.lock").write_text("left behind by a killed driver")
    assert sweep(tmp_path, name="locked", seeds=1).trained == 2  # a stale lock file is no lock


def test_units_group_cells_that_differ_in_seed_and_gamma(tmp_path):
    spec = SweepSpec("toy-mixer", "toy-count", "quick", {"gamma": [0.5, 1.0], "n_layers": [1, 2]}, [0, 1, 2])
    cells = plan_cells(spec, tmp_path)
    units = make_units(cells, ensemble=True, max_members=16, slots=1)
    assert sorted(len(u.cells) for u in units) == [6, 6]
    assert all(len({c.model_config["n_layers"] for c in u.cells}) == 1 for u in units)
    assert sorted(len(u.cells) for u in make_units(cells, True, max_members=4, slots=1)) == [2, 2, 4, 4]
    assert sorted(len(u.cells) for u in make_units(cells, True, max_members=16, slots=4)) == [3, 3, 3, 3]
    assert len(make_units(cells, ensemble=False)) == 12


# -- CLI ------------------------------------------------------------------------------------------
def test_cli_sweep_dry_run_train_and_report(tmp_path):
    args = ["sweep", "--arch", "toy-mixer", "--task", "toy-count", "--grid", "gamma=0.5,1", "--grid",
            "n_layers=1", "--seeds", "1", "--profile", "quick", "--out", str(tmp_path / "sw"), "--workers", "0",
            "--threads", "1", "--epochs", "1", "--train-samples", "64", "--eval-samples", "16", "--batch-size", "32",
            "--no-progress"]
    runner = CliRunner()
    dry = runner.invoke(cli, args + ["--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert "2 cells: 0 done, 2 to train in 2 unit(s)" in dry.output  # a CPU trains one by one
    assert "2 to train in 1 unit(s) (ensembles" in runner.invoke(cli, args + ["--dry-run", "--ensemble"]).output
    assert not (tmp_path / "sw" / "sweep.json").exists()
    done = runner.invoke(cli, args)
    assert done.exit_code == 0, done.output
    assert "mean test.acc" in done.output and "1/1" in done.output and "2 cell(s) trained" in done.output
    report = runner.invoke(cli, ["sweep", "--resume", str(tmp_path / "sw"), "--report-only"])
    assert report.exit_code == 0 and "phase_acc.png" in report.output
    resumed = runner.invoke(cli, ["sweep", "--resume", str(tmp_path / "sw"), "--workers", "0", "--no-progress"])
    assert resumed.exit_code == 0 and "0 cell(s) trained, 2 already done" in resumed.output
    changed = runner.invoke(cli, ["sweep", "--resume", str(tmp_path / "sw"), "--epochs", "3"])
    assert changed.exit_code == 2 and "drop --epochs" in changed.output
    assert "--address: is for --executor ray" in runner.invoke(cli, args + ["--address", "auto"]).output


def test_ray_missing_is_one_line(tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray" or name.startswith("ray."):
            raise ImportError("no ray")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    result = CliRunner().invoke(cli, ["sweep", "--arch", "toy-mixer", "--task", "toy-count", "--grid", "gamma=0.5",
                                      "--profile", "quick", "--out", str(tmp_path / "r"), "--executor", "ray"])
    assert result.exit_code == 2
    assert result.output.strip() == 'Error: the ray executor needs Ray: pip install "achilles[ray]"'


# -- heatmaps -------------------------------------------------------------------------------------
def test_composite_phase_diagram_draws_both_solutions_side_by_side(tmp_path):
    from achilles.sweep import phase_metrics
    from achilles.sweep.phase import draw_phase, phase_grid

    spec = SweepSpec("mamba2", "composite", "quick", {"gamma": [0.5, 0.75, 1.0], "n_layers": [2, 3]}, [0, 1])
    rows = [{"gamma": g, "n_layers": n, "seed": s, "status": "finished",
             "test.acc_43_composite": g * s, "test.acc_43_symmetric": 1 - g}
            for g in (0.5, 0.75, 1.0) for n in (2, 3) for s in (0, 1)]
    rows[-1]["status"] = "failed"
    metrics = phase_metrics(spec)  # declared by the composite task, not known to core
    assert metrics == ["test.acc_43_composite", "test.acc_43_symmetric"]
    means, counts = phase_grid(rows, metrics[0], "gamma", [0.5, 0.75, 1.0], "n_layers", [2, 3], {})
    assert counts.tolist() == [[2, 2, 2], [2, 2, 1]]
    assert means[0].tolist() == [0.25, 0.375, 0.5] and means[1, 2] == 0.0  # the failed seed is left out
    written = draw_phase(spec, rows, metrics, tmp_path)
    assert sorted(os.path.basename(p) for p in written) == \
        ["phase.png", "phase_acc_43_composite.png", "phase_acc_43_symmetric.png"]
    assert all(0 < os.path.getsize(p) < 200_000 for p in written)


# -- executors --------------------------------------------------------------------------------------
def test_local_process_pool_forwards_in_process_plugins(tmp_path):
    """Spawned workers register the parent's in-process plugin (toy) again, then train."""
    result = sweep(tmp_path, seeds=1, workers=1, ensemble=False)
    assert result.trained == 2 and not result.errors, result.errors
    assert {r["status"] for r in result.rows} == {"finished"}
    reference = sweep(tmp_path, seeds=1, name="inprocess", workers=0)
    for a, b in zip(result.rows, reference.rows):  # the pool trains exactly what this process trains
        assert a["test.acc"] == b["test.acc"] and a["test.loss"] == pytest.approx(b["test.loss"], abs=1e-6)


@pytest.mark.ray
def test_ray_executor_on_a_local_two_cpu_instance(tmp_path):
    ray = pytest.importorskip("ray", reason="ray is not installed (pip install \"achilles[ray]\")")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)  # the sweep forwards env and plugins
    try:
        result = sweep(tmp_path, seeds=1, executor="ray", ensemble=False)
    finally:
        ray.shutdown()
    assert result.trained == 2 and not result.errors, result.errors
    rows, metrics, _ = aggregate(result.path)
    assert metrics == ["test.acc"] and [r["status"] for r in rows] == ["finished", "finished"]
