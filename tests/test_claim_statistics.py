"""How claims are measured: independent replicates, intervals across runs, paired comparisons on
shared data, banded rules, premises met by enough runs, undecidable sizes said out loud, and
seeds added until a premise is met."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from achilles.recipes import (Claim, RunGroup, Selector, Source, Until, at_least, minus, near_chance, rate,
                              share_of_cells, within)
from achilles.recipes.statistics import HELD, INCONCLUSIVE, NOT_HELD, Measurement, difference, rate_measurement
from achilles.recipes.measure import evaluate_claims
from achilles.recipes.recipe_results import RecipeResults, RunRecord

from test_recipes import PAPER, TOY_TRAIN, invoke, register_toy, toy_recipe


def results_of(rows, groups=("mixer", "other")):
    """RecipeResults from (group, seed, value, eval_samples, cell) rows; seed s of any group on the same data."""
    from achilles.recipes import Plan

    recipe = toy_recipe(groups=[RunGroup(g, "toy-mixer", "toy-count", train=TOY_TRAIN) for g in groups])
    runs = [RunRecord(g, dict(cell or {}), seed, Path(f"/nowhere/{g}/{seed}"), "finished",
                      config={"task": "toy-count", "seed": seed, "final_metrics": {"test": {"acc": v}},
                              "training": {"eval_samples": n, "train_samples": 100}})
            for g, seed, v, n, cell in rows]
    return RecipeResults(recipe, "quick", recipe.plan("quick"), Path("/nowhere"), runs)


def test_a_rate_over_runs_uses_the_spread_across_runs_not_pooled_samples():
    m = rate_measurement([0.20, 0.22, 0.18], [100_000] * 3)
    half = 4.303 * 0.02 / math.sqrt(3)  # t with 2 dof on the per-run values
    assert m.interval == "t" and m.lo == pytest.approx(0.2 - half, abs=1e-6) and m.hi == pytest.approx(0.2 + half, abs=1e-6)
    assert "3 runs" in m.counts and "100,000 distinct samples" in m.counts


def test_identical_runs_keep_one_runs_sampling_error():
    m = rate_measurement([1.0, 1.0, 1.0], [200] * 3)
    assert m.hi == 1.0 and m.lo < 0.99  # floored at one run's Wilson width, not a zero-width interval


def test_one_run_uses_its_own_distinct_samples_only():
    m = rate_measurement([0.5], [400])
    assert m.interval == "wilson" and m.samples == 400 and "400 distinct samples" in m.method


def test_runs_on_the_same_data_are_compared_pair_by_pair():
    results = results_of([("mixer", s, v, 1000, None) for s, v in enumerate([0.90, 0.80, 0.70])]
                         + [("other", s, v, 1000, None) for s, v in enumerate([0.85, 0.75, 0.65])])
    m = minus(rate("mixer", "acc"), rate("other", "acc"))(results)
    # the spread across seeds is large, the paired difference is exactly 0.05 every time
    assert m.interval == "paired-t" and m.value == pytest.approx(0.05)
    assert m.lo == pytest.approx(0.05) and m.hi == pytest.approx(0.05)
    assert set(m.sides) == {"a", "b"} and len(m.sides["a"].per_run) == 3


def test_runs_on_different_data_are_compared_with_welch():
    a = rate_measurement([0.9, 0.8, 0.7], [1000] * 3)
    b = Measurement(0.3, 0.2, 0.4, "b", per_run=[{"run": f"r{i}", "value": v, "n": 1000, "pair": f"other{i}"}
                                                 for i, v in enumerate([0.25, 0.3, 0.35])])
    m = difference(a, b)
    assert m.interval == "welch" and m.value == pytest.approx(0.5) and m.lo < 0.5 < m.hi


@pytest.mark.parametrize("lo, hi, verdict", [(0.16, 0.24, HELD), (0.30, 0.40, NOT_HELD), (0.01, 0.10, NOT_HELD),
                                             (0.20, 0.30, INCONCLUSIVE)])
def test_at_chance_is_a_two_sided_band(lo, hi, verdict):
    rule = near_chance(0.2, 0.05, "a stated reason")
    assert rule.verdict(Measurement((lo + hi) / 2, lo, hi, "x"))[0] == verdict
    assert "0.15, 0.25" in rule.text() and "a stated reason" in rule.text()


def test_a_rule_states_its_basis():
    assert "the paper's 15%" in at_least(0.5, "the paper's 15%").text()
    assert within(-0.1, 0.1).text().startswith("within [-0.1, 0.1]")


def test_a_share_of_too_few_cells_says_it_cannot_be_decided():
    results = results_of([("mixer", 0, 0.2, 1000, {"gamma": g}) for g in (0.5, 0.6, 0.7, 0.8, 0.9, 1.0)])
    claim = Claim("nearly-all", "nearly all cells at chance", Source(PAPER, "x"),
                  share_of_cells("mixer", "acc", lambda v: v < 0.3, "< 0.3", threshold=0.75), at_least(0.75), "share")
    (row,) = evaluate_claims([claim], results)
    assert row["verdict"] == INCONCLUSIVE and "at least 12 cells are needed" in row["why"]
    assert "about 12 cells (now 6) would decide it" in row["why"]  # Wilson at 6 of 6, not 1/√n


def test_a_premise_met_by_too_few_runs_is_inconclusive_with_the_count():
    results = results_of([("mixer", s, v, 1000, None) for s, v in enumerate([0.95, 0.96, 0.1, 0.2])])
    good = Selector("acc ≥ 0.9", lambda run: run.final("test", "acc") >= 0.9)
    (row,) = evaluate_claims([Claim("c", "c", Source(PAPER, "x"), rate("mixer", "acc", only=good, min_runs=3),
                                    at_least(0.5), "acc", decides="more seeds")], results)
    assert row["verdict"] == INCONCLUSIVE and "only 2 of 4 runs" in row["why"] and "at least 3" in row["why"]
    assert "What would decide it: more seeds" in row["why"]


def test_seeds_are_added_until_enough_runs_meet_the_premise(tmp_path):
    always = Until("any finished run", lambda run: True, need=3, cap=5)
    never = Until("an impossible premise", lambda run: False, need=3, cap=4)
    groups = (RunGroup("mixer", "toy-mixer", "toy-count", grid={"gamma": [0.5]}, seeds=1, train=TOY_TRAIN, until=always),
              RunGroup("other", "toy-mixer", "toy-count", grid={"gamma": [1.0]}, seeds=2, train=TOY_TRAIN, until=never))
    register_toy([toy_recipe("toy-until", groups=groups)])
    out = tmp_path / "out"
    result = invoke("toy-until", "--out", str(out))
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    seeds = {g: sorted(r["seed"] for r in report["runs"] if r["group"] == g) for g in ("mixer", "other")}
    assert seeds == {"mixer": [0, 1, 2], "other": [0, 1, 2, 3]}  # met at 3; stopped at the cap of 4
    assert {b["group"]: b["seeds"] for b in report["budget"]} == {"mixer": 3, "other": 4}


def test_an_inconclusive_verdict_says_how_many_runs_would_decide_it():
    results = results_of([("mixer", s, v, 1000, None) for s, v in enumerate([0.6, 0.9, 0.7])])
    (row,) = evaluate_claims([Claim("c", "c", Source(PAPER, "x"), rate("mixer", "acc"), at_least(0.5), "acc")],
                             results)
    assert row["verdict"] == INCONCLUSIVE and "about 6 runs (now 3) would decide it" in row["why"]
