"""Recipes: registration, claim verdicts, `achilles reproduce` end to end on a toy recipe (seconds),
resume after an interrupt, reports, bad input, and the first-party recipes' well-formedness."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pytest
from click.testing import CliRunner

import achilles
from achilles.cli.main import cli
from achilles.recipes import (Claim, Figure, Plan, Precondition, Recipe, RunGroup, Source, at_least, at_most,
                              get_recipe, list_recipes, minus, rate)
from achilles.recipes.statistics import HELD, INCONCLUSIVE, NOT_HELD, Measurement, difference, rate_measurement, wilson
from achilles.recipes.measure import evaluate_claims
from achilles.recipes.recipe_results import RecipeResults, RunRecord
from achilles.contract.task import Paper

sys.path.insert(0, str(Path(__file__).parent))
import toy_plugin  # noqa: E402

PAPER = Paper("A toy paper", "0000.00000", short="Toy")
TOY_TRAIN = {"epochs": 2, "batch_size": 16, "train_samples": 64, "eval_samples": 32}


def toy_recipe(name: str = "toy-count", groups=None, claims=None, figures=()) -> Recipe:
    groups = groups or (RunGroup("mixer", "toy-mixer", "toy-count", grid={"gamma": [0.5, 1.0]}, seeds=2,
                                 train=TOY_TRAIN),)
    claims = claims or (
        Claim("impossible", "accuracy above one", Source(PAPER, "Fig. 1", "100%"), rate("mixer", "acc"),
              at_least(1.01), "test accuracy"),
        Claim("trivial", "accuracy at most one", Source(PAPER, "Fig. 1"), rate("mixer", "acc"), at_most(1.0),
              "test accuracy"),
    )
    return Recipe(name, "Counting ones", PAPER, "Figure 1", "A toy finding.",
                  plans={"quick": Plan(runs=tuple(groups), departures="tiny budget")}, claims=tuple(claims),
                  figures=tuple(figures))


def register_toy(recipes) -> None:
    module = types.ModuleType("toy_recipes")
    module.register_tasks = toy_plugin.register_tasks
    module.register_architectures = toy_plugin.register_architectures

    @achilles.hookimpl
    def register_recipes(register):
        for recipe in recipes:
            register(recipe.name, recipe)

    module.register_recipes = register_recipes
    achilles.register_plugin(module, "toy_recipes")


def invoke(*args):
    return CliRunner().invoke(cli, ["reproduce", *args, "--workers", "0", "--no-progress"]
                              if args and not args[0].startswith("--") else ["reproduce", *args])


# -- verdicts ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("rule, verdict", [
    (at_least(0.4), HELD), (at_least(0.5), INCONCLUSIVE), (at_least(0.61), NOT_HELD),
    (at_most(0.6), HELD), (at_most(0.55), INCONCLUSIVE), (at_most(0.39), NOT_HELD)])
def test_rule_verdicts_at_the_interval_edges(rule, verdict):
    assert rule.verdict(Measurement(0.5, 0.4, 0.6, "test"))[0] == verdict


def test_missing_runs_or_no_data_are_inconclusive():
    assert at_least(0.1).verdict(Measurement(0.5, 0.4, 0.6, "x", missing=["run (failed)"]))[0] == INCONCLUSIVE
    assert at_least(0.1).verdict(Measurement(None, None, None, "no data"))[0] == INCONCLUSIVE


def test_wilson_interval_and_across_seed_widening():
    lo, hi = wilson(50, 100)
    assert lo == pytest.approx(0.4038, abs=1e-3) and hi == pytest.approx(0.5962, abs=1e-3)
    narrow = rate_measurement([0.5, 0.5, 0.5], [1000, 1000, 1000])
    wide = rate_measurement([0.1, 0.5, 0.9], [1000, 1000, 1000])
    assert wide.value == pytest.approx(0.5) == narrow.value
    assert (wide.hi - wide.lo) > 5 * (narrow.hi - narrow.lo)
    one = rate_measurement([1.0], [20])  # one run: binomial only, and never above 1
    assert one.hi == 1.0 and one.lo < 1.0


def test_difference_interval_is_conservative():
    d = difference(Measurement(0.9, 0.85, 0.95, "a"), Measurement(0.2, 0.1, 0.3, "b"))
    assert d.value == pytest.approx(0.7) and d.lo == pytest.approx(0.55) and d.hi == pytest.approx(0.85)


def _synthetic(values_by_seed, group="mixer", split="test", metric="acc", status="finished"):
    recipe = toy_recipe()
    runs = [RunRecord(group, {"gamma": 0.5}, seed, Path(f"/nowhere/{seed}"), status,
                      config={"final_metrics": {split: {metric: v}}, "training": {"eval_samples": 1000}})
            for seed, v in enumerate(values_by_seed)]
    return RecipeResults(recipe, "quick", recipe.plan("quick"), Path("/nowhere"), runs)


def test_claims_on_synthetic_metrics():
    results = _synthetic([0.96, 0.97, 0.98])
    claims = [Claim("high", "high", Source(PAPER, "x"), rate("mixer", "acc"), at_least(0.9), "acc"),
              Claim("edge", "edge", Source(PAPER, "x"), rate("mixer", "acc"), at_least(0.97), "acc"),
              Claim("low", "low", Source(PAPER, "x"), rate("mixer", "acc"), at_most(0.5), "acc"),
              Claim("gated", "needs a failed precondition", Source(PAPER, "x"), rate("mixer", "acc"), at_least(0.9),
                    "acc", requires=(Precondition("impossible", rate("mixer", "acc"), at_least(0.999)),)),
              Claim("typo", "a metric nobody reports", Source(PAPER, "x"), rate("mixer", "nope"), at_least(0.1), "x")]
    verdicts = {row["id"]: row["verdict"] for row in evaluate_claims(claims, results)}
    assert verdicts == {"high": HELD, "edge": INCONCLUSIVE, "low": NOT_HELD, "gated": INCONCLUSIVE,
                        "typo": INCONCLUSIVE}


def test_unfinished_runs_are_named_and_make_the_claim_inconclusive():
    results = _synthetic([0.96, 0.97])
    results.runs.append(RunRecord("mixer", {"gamma": 0.5}, 2, Path("/nowhere/2"), "failed"))
    (row,) = evaluate_claims([Claim("high", "high", Source(PAPER, "x"), rate("mixer", "acc"), at_least(0.9), "acc")],
                             results)
    assert row["verdict"] == INCONCLUSIVE and "seed=2" in row["why"] and "failed" in row["why"]


# -- registration -----------------------------------------------------------------------------------------
def test_first_party_recipes_are_registered_and_well_formed():
    from achilles.recipes import sweeps
    from achilles.training.trainer import build_task_and_model

    names = list_recipes()
    for name in ("achilles-fig4", "achilles-fig6", "achilles-fig7", "achilles-fig8", "achilles-fig9",
                 "achilles-fig13", "achilles-gated", "conv-similarity", "shortcuts-position", "shortcuts-ngram",
                 "copy-length", "cot-dp"):
        assert name in names
    for name in names:
        recipe = get_recipe(name)
        assert recipe.claims and set(recipe.plans) == {"quick", "paper"}
        for profile, plan in recipe.plans.items():
            for group in plan.runs:
                spec = sweeps.spec_for(group, plan, "cpu")  # names and grid checked
                cell = {k: v[0] for k, v in group.grid.items() if "." not in k}
                build_task_and_model(group.arch, group.task, {**spec.model_config, **cell}, spec.task_config, 0)


def test_a_third_party_recipe_is_listed_and_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    register_toy([toy_recipe("toy-count")])
    result = invoke("--list")
    assert result.exit_code == 0 and "toy-count" in result.output and "Toy Figure 1" in result.output


def test_a_malformed_recipe_is_refused_with_its_plugin_named():
    from achilles.recipes import ProbeStep

    bad = toy_recipe("toy-bad")
    bad = Recipe(bad.name, bad.title, PAPER, "x", "x",
                 plans={"quick": Plan(runs=bad.plans["quick"].runs, probes=(ProbeStep("blocking", "nobody"),))},
                 claims=bad.claims)
    register_toy([bad])
    with pytest.raises(achilles.AchillesError, match="toy_recipes.*unknown group 'nobody'"):
        get_recipe("toy-bad")


# -- achilles reproduce end to end ---------------------------------------------------------------------------
def test_reproduce_end_to_end(tmp_path):
    from achilles.plugins.recipes import figures

    register_toy([toy_recipe(figures=(Figure("bars", figures.bars([("mixer", "mixer")], [("test", "acc", None, "test")],
                                                                  title="toy"), "toy bars"),))])
    out = tmp_path / "out"
    result = invoke("toy-count", "--out", str(out))
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert {c["id"]: c["verdict"] for c in report["claims"]} == {"impossible": NOT_HELD, "trivial": HELD}
    assert report["complete"] and len(report["runs"]) == 4 and (out / "figures" / "bars.png").is_file()
    text = (out / "report.md").read_text()
    assert "| accuracy above one | Toy Fig. 1: 100% |" in text and "not held" in text
    for card in (out / "runs").glob("*/*/README.md"):  # each checkpoint's card names the report it backs
        assert "backs the report" in card.read_text() and str((out / "report.md").resolve()) in card.read_text()
    weights = sorted((out / "runs").glob("*/*/model.safetensors"))
    stamps = [w.stat().st_mtime_ns for w in weights]
    again = invoke("toy-count", "--out", str(out))
    assert again.exit_code == 0 and "to train" not in again.output
    assert [w.stat().st_mtime_ns for w in weights] == stamps  # finished runs reused, not retrained


def test_a_newer_report_of_the_same_recipe_replaces_the_old_link(tmp_path):
    register_toy([toy_recipe()])
    store = tmp_path / "runs"
    for out in ("first", "second"):
        result = invoke("toy-count", "--out", str(tmp_path / out / "toy-count"), "--runs", str(store))
        assert result.exit_code == 0, result.output
    from achilles.runs.folder import RunFolder

    runs = [p.parent for p in store.glob("*/*/model.safetensors")]
    assert runs
    for run in runs:
        reports = RunFolder(run).read_config()["reports"]
        assert reports == [str((tmp_path / "second" / "toy-count" / "report.md").resolve())]


def test_reproduce_resumes_after_an_interrupt(tmp_path, monkeypatch):
    from achilles import sweep
    from achilles.sweep import SweepInterrupted

    groups = (RunGroup("mixer", "toy-mixer", "toy-count", grid={"gamma": [0.5]}, seeds=1, train=TOY_TRAIN),
              RunGroup("other", "toy-mixer", "toy-count", grid={"gamma": [1.0]}, seeds=1,
                       train={**TOY_TRAIN, "epochs": 1}))
    register_toy([toy_recipe(groups=groups)])
    real = sweep.run_sweeps

    def stopped_after_the_first(jobs, options):  # Ctrl-C once the first group has trained
        raise SweepInterrupted(real(jobs[:1], options)[0])

    monkeypatch.setattr(sweep, "run_sweeps", stopped_after_the_first)
    out = tmp_path / "out"
    first = invoke("toy-count", "--out", str(out))
    assert first.exit_code == 130 and "run the same command again" in first.output.lower()
    assert not (out / "report.md").exists()
    (weights,) = (out / "runs").glob("*/*g0.5*/model.safetensors")
    stamp = weights.stat().st_mtime_ns
    monkeypatch.setattr(sweep, "run_sweeps", real)
    second = invoke("toy-count", "--out", str(out))
    assert second.exit_code == 0, second.output
    assert weights.stat().st_mtime_ns == stamp  # the finished run is reused
    report = json.loads((out / "report.json").read_text())
    assert report["complete"] and len(report["runs"]) == 2


def test_a_report_from_failed_runs_names_them(tmp_path):
    groups = (RunGroup("mixer", "toy-mixer", "toy-count", grid={"gamma": [0.5]}, seeds=1,
                       train={**TOY_TRAIN, "lr_peak": 1e30}),)
    register_toy([toy_recipe(groups=groups)])
    out = tmp_path / "out"
    result = invoke("toy-count", "--out", str(out))
    assert result.exit_code == 2 and "none of the 1 run(s) of toy-count finished" in result.output  # issue 19
    report = json.loads((out / "report.json").read_text())
    assert not report["complete"] and "failed" in report["missing"][0]
    assert all(c["verdict"] == INCONCLUSIVE for c in report["claims"])
    assert "Incomplete" in (out / "report.md").read_text()


def test_dry_run_prints_the_plan_and_trains_nothing(tmp_path):
    register_toy([toy_recipe()])
    out = tmp_path / "out"
    result = invoke("toy-count", "--out", str(out), "--dry-run")
    assert result.exit_code == 0, result.output
    assert "mixer" in result.output and "Estimated training time" in result.output and "4" in result.output
    assert not list(out.glob("runs/*/*/model.safetensors"))


@pytest.mark.parametrize("args, message", [
    (["toy-cont"], "did you mean: toy-count"),
    (["toy-count", "--seeds", "0"], "--seeds"),
    (["toy-count", "--train-set", "epochz=2"], "epochz"),
    (["toy-count", "--profile", "paper"], "has no 'paper' profile"),
])
def test_bad_input_is_one_line(tmp_path, args, message):
    register_toy([toy_recipe()])
    result = invoke(*args, "--out", str(tmp_path / "out"))
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output


def test_an_out_folder_of_something_else_is_refused_untouched(tmp_path):
    register_toy([toy_recipe()])
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    result = invoke("toy-count", "--out", str(mine))
    assert result.exit_code == 2 and "not a reproduction folder" in result.output
    assert [p.name for p in mine.iterdir()] == ["notes.txt"] and (mine / "notes.txt").read_text() == "keep me"


def test_summary_page_has_one_row_per_claim(tmp_path):
    from achilles.recipes.report import write_summary

    for name, verdict in (("fig13", HELD), ("fig4", NOT_HELD)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "report.json").write_text(json.dumps({
            "recipe": name, "profile": "quick", "complete": True,
            "claims": [{"statement": f"claim of {name}", "paper": "Toy", "where": "Fig. 1", "paper_value": "",
                        "measured": "0.5 [0.4, 0.6]", "verdict": verdict}]}))
    page = write_summary(tmp_path).read_text()
    assert "claim of fig4" in page and "claim of fig13" in page and "1 held, 1 not held, 0 inconclusive" in page
    assert page.index("[fig4](fig4/report.md)") < page.index("[fig13](fig13/report.md)")  # natural order
    assert "NOTES.md" not in page
    (tmp_path / "NOTES.md").write_text("# reading the numbers")
    assert "(NOTES.md)" in write_summary(tmp_path).read_text()  # hand-written notes are linked, not overwritten
    assert (tmp_path / "NOTES.md").read_text() == "# reading the numbers"
    (tmp_path / "atlas").mkdir()
    (tmp_path / "atlas" / "atlas.json").write_text("{}")  # an atlas beside the reports is linked, not a recipe row
    page = write_summary(tmp_path).read_text()
    assert "(atlas/README.md)" in page and "2 claim(s)" in page


@pytest.mark.parametrize("content", ["{broken", '{"recipe": "x", "profile": "quick", "claims": [{"a": 1}]}'])
def test_summary_refuses_a_corrupt_report_in_one_line(tmp_path, content):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "report.json").write_text(content)
    result = invoke("--summary", str(tmp_path))
    assert result.exit_code == 2 and "x/report.json is not a readable achilles report" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert not (tmp_path / "README.md").exists()


def test_summary_never_overwrites_a_readme_of_the_user(tmp_path):
    (tmp_path / "README.md").write_text("my notes")
    result = invoke("--summary", str(tmp_path))
    assert result.exit_code == 2 and "not an achilles summary page" in result.output
    assert (tmp_path / "README.md").read_text() == "my notes"


def test_cost_estimate_from_a_throughput_table(tmp_path, monkeypatch):
    from achilles.recipes import cost

    table = {"cpu": {"machine": "test", "how": "test", "entries": [
        {"arch": "toy-mixer", "task": "toy-count", "n_layers": 2, "d_model": 8, "seq_len": 6, "samples_per_s": 64.0}]}}
    monkeypatch.setattr(cost, "throughput_table", lambda path=None: table)
    register_toy([toy_recipe()])
    plan = get_recipe("toy-count").plan("quick")
    estimate = cost.estimate_plan(plan, "cpu", workers=2)
    # 4 runs x 2 epochs x (64 train + 2 x 32 eval / 3) samples at 64 samples/s, two at a time
    assert estimate.seconds == pytest.approx(4 * 2 * (64 + 64 / 3) / 64 / 2)
    assert cost.estimate_plan(plan, "cuda").text() == "not measured"


def test_a_cpu_that_measured_some_shapes_borrows_the_rest_at_its_own_speed(monkeypatch):
    """This CPU measured the atlas's mixers; figure 4's shapes were measured on another CPU only:
    they are borrowed, times this CPU's speed relative to that one, and count as scaled."""
    from achilles.recipes import cost
    from achilles.training import precision

    shape = dict(n_layers=2, d_model=32, seq_len=8)
    table = {"cpu": {"fallback": "Old CPU", "by_model": {
        "Old CPU": {"machine": "old", "how": "test", "entries": [
            {"arch": "mamba2", "task": "inverse", **shape, "samples_per_s": 100.0},
            {"arch": "mamba2", "task": "composite", **shape, "samples_per_s": 1000.0}]},
        "New CPU": {"machine": "new", "how": "test", "entries": [
            {"arch": "mamba2", "task": "inverse", **shape, "samples_per_s": 50.0}]}}}}
    monkeypatch.setattr(cost, "throughput_table", lambda path=None: table)
    monkeypatch.setattr(precision, "cpu_description", lambda: {"model": "New CPU", "bf16_units": []})
    assert cost.samples_per_second(cost.Shape("mamba2", "composite", 2, 32, 8), "cpu") == (500.0, True)
    assert cost.samples_per_second(cost.Shape("mamba2", "inverse", 2, 32, 8), "cpu") == (50.0, False)
    assert "from Old CPU's table times 0.50" in cost.how_estimated("cpu")
    monkeypatch.setattr(precision, "cpu_description", lambda: {"model": "Old CPU", "bf16_units": []})
    assert cost.samples_per_second(cost.Shape("mamba2", "composite", 2, 32, 8), "cpu") == (1000.0, False)


def test_an_unmeasured_shape_is_scaled_from_its_own_architecture_before_another_one(monkeypatch):
    """A slow mixer measured on one task is not estimated from a fast one measured on the task asked
    for (the atlas's mamba1 columns were estimated 7x too short that way)."""
    from achilles.recipes import cost

    entry = dict(n_layers=2, d_model=32, seq_len=8)
    table = {"cpu": {"machine": "test", "how": "test", "entries": [
        {"arch": "fast", "task": "inverse", **entry, "samples_per_s": 1000.0},
        {"arch": "slow", "task": "mqar", **entry, "samples_per_s": 100.0}]}}
    monkeypatch.setattr(cost, "throughput_table", lambda path=None: table)
    assert cost.samples_per_second(cost.Shape("slow", "inverse", 2, 32, 16), "cpu") == (50.0, True)
    assert cost.samples_per_second(cost.Shape("new", "inverse", 2, 32, 8), "cpu") == (1000.0, True)
    assert cost.samples_per_second(cost.Shape("new", "copy", 2, 32, 8), "cpu") == (None, False)


# -- figures a reader trusts --------------------------------------------------------------------------------
def test_training_curves_of_a_one_epoch_run_show_every_series(tmp_path):
    from achilles.runs.figures import plt, training_curves_figure
    from achilles.runs.folder import RunFolder

    run = RunFolder(tmp_path)
    run.write_config({"arch": "mamba2", "task": "composite", "headline": {"metric": "acc_43_composite"},
                      "training": {"profile": "quick"}, "seed": 0})
    run.append_metrics({"epoch": 1, "loss": 2.0, "lr": 1e-3, "metrics": {
        "train": {"loss": 1.9, "acc_43_composite": float("nan")},
        "test": {"loss": 2.1, "acc_43_composite": 0.4}}})
    fig = training_curves_figure(run)
    ax_loss, ax_acc, ax_lr = fig.axes
    assert all(line.get_marker() not in (None, "None", "") for line in ax_loss.lines)  # one point shows
    legend = [t.get_text() for t in ax_loss.get_legend().get_texts()]
    assert "learning rate" in legend and "train loss (running mean)" in legend
    assert [t.get_text() for t in ax_acc.get_legend().get_texts()] == ["test"]  # no empty 'train' entry
    assert ax_loss.get_ylabel() and ax_acc.get_ylabel() and ax_lr.get_ylabel()
    assert all(float(t).is_integer() for t in ax_acc.get_xticks())
    plt.close(fig)


def test_groups_with_the_same_settings_share_one_sweep_folder(tmp_path):
    groups = (RunGroup("mixer", "toy-mixer", "toy-count", grid={"gamma": [0.5]}, seeds=1, train=TOY_TRAIN),
              RunGroup("other", "toy-mixer", "toy-count", grid={"gamma": [0.5, 1.0]}, seeds=1, train=TOY_TRAIN))
    register_toy([toy_recipe(groups=groups)])
    out = tmp_path / "out"
    result = invoke("toy-count", "--out", str(out))
    assert result.exit_code == 0, result.output
    (folder,) = (out / "runs").iterdir()  # one sweep folder; the cell both groups name trained once
    assert sorted(p.parent.name for p in folder.glob("*/model.safetensors")) == [
        "toy-mixer.toy-count-l2-g0.5-s0-quick", "toy-mixer.toy-count-l2-g1.0-s0-quick"]
    assert len((folder / "results.csv").read_text().splitlines()) == 3  # header + both cells
    report = json.loads((out / "report.json").read_text())
    assert report["complete"] and [r["group"] for r in report["runs"]] == ["mixer", "other", "other"]


def test_a_selector_measures_only_the_runs_that_qualify():
    from achilles.recipes import Selector

    results = _synthetic([0.9, 0.95, 0.1])
    learned = Selector("acc ≥ 0.5", lambda run: run.final("test", "acc") >= 0.5)
    m = rate("mixer", "acc", only=learned)(results)
    assert m.value == pytest.approx(0.925) and [o["value"] for o in m.per_run] == [0.9, 0.95] and not m.missing
    assert "2 of 3 finished runs qualify (acc ≥ 0.5)" in m.method
    none = rate("mixer", "acc", only=Selector("impossible", lambda run: False))(results)
    assert none.value is None and at_least(0.0).verdict(none)[0] == INCONCLUSIVE


@pytest.mark.parametrize("transformer_test, verdict", [(0.97, HELD), (0.30, INCONCLUSIVE)])
def test_fig13_fails_nearly_everywhere_only_where_the_budget_lets_attention_generalise(transformer_test, verdict):
    """Figure 13's failure is Mamba2's only if a Transformer on the same samples and budget generalises:
    twelve fitted cells at chance hold the claim, unless the control did not generalise either."""
    from achilles.recipes import get_recipe

    recipe = get_recipe("achilles-fig13")
    metrics = {"train": {"acc": 0.99}, "test": {"acc": 0.2}}
    runs = [RunRecord("mamba2", {"gamma": g, "n_layers": n}, 0, Path(f"/nowhere/{g}-{n}"), "finished",
                      config={"final_metrics": metrics, "training": {"eval_samples": 2000}})
            for g in (0.5, 0.6, 0.7, 0.8, 0.9, 1.0) for n in (2, 3)]
    runs += [RunRecord("transformer", {"gamma": 0.5, "n_layers": 2}, s, Path(f"/nowhere/t{s}"), "finished",
                       config={"final_metrics": {"train": {"acc": 1.0}, "test": {"acc": transformer_test + s / 100}},
                               "training": {"eval_samples": 2000}})
             for s in range(3)]
    results = RecipeResults(recipe, "quick", recipe.plan("quick"), Path("/nowhere"), runs)
    rows = {row["id"]: row for row in evaluate_claims(recipe.claims, results)}
    assert rows["fits-training-data"]["verdict"] == HELD
    assert rows["fails-nearly-everywhere"]["verdict"] == verdict
    if verdict == INCONCLUSIVE:
        assert "precondition not met: the budget suffices" in rows["fails-nearly-everywhere"]["why"]
