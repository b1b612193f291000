"""Every claim's number and verdict follows from the per-run values its report.json lists.

The recomputation (tests/recompute_claims.py) is independent of ``achilles.recipes.measure``: it
has its own t quantiles (from the t distribution), Wilson interval and verdict rules. It runs on
every committed report under examples/reports/ and on a report made here from trained toy runs."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from recompute_claims import check_claim, t_quantile_975  # noqa: E402

REPORTS = Path(__file__).resolve().parents[1] / "examples" / "reports"


def committed_reports() -> list[Path]:
    return sorted(REPORTS.glob("*/report.json")) + sorted(REPORTS.glob("atlas/*/*/report.json"))  # the atlas's cells too


def test_the_independent_t_quantiles_are_right():
    # textbook values of the two-sided 95% t quantile
    for dof, q in ((1, 12.7062), (2, 4.3027), (4, 2.7764), (10, 2.2281), (30, 2.0423)):
        assert t_quantile_975(dof) == pytest.approx(q, abs=1e-3)


@pytest.mark.parametrize("report", committed_reports(), ids=lambda p: str(p.parent.relative_to(REPORTS)))
def test_every_committed_claim_recomputes_from_its_report(report):
    from achilles.recipes.report import recomputable

    data = json.loads(report.read_text())
    problems, stale = [], []
    for claim in data["claims"]:
        if not recomputable(data, claim):
            stale.append(claim["id"])
            continue
        problems += check_claim(claim)
    assert not problems, "\n".join(problems)
    # a report without per-run values must be an old one, and the summary page must say so
    if stale:
        assert data.get("format") != "achilles-report/2", f"{report}: claims {stale} lack per-run values"
        summary = (REPORTS / "README.md").read_text()
        assert "per-run values missing" in summary


def test_a_fresh_report_recomputes_and_a_tampered_one_does_not(tmp_path):
    from test_recipes import PAPER, TOY_TRAIN, invoke, register_toy, toy_recipe

    from achilles.recipes import Claim, RunGroup, Source, at_least, minus, near_chance, rate

    groups = (RunGroup("mixer", "toy-mixer", "toy-count", grid={"gamma": [0.5]}, seeds=3, train=TOY_TRAIN),
              RunGroup("other", "toy-mixer", "toy-count", grid={"gamma": [0.5]}, seeds=3,
                       train={**TOY_TRAIN, "epochs": 1}))
    claims = (Claim("rate", "a rate", Source(PAPER, "x"), rate("mixer", "acc"), at_least(0.1), "acc"),
              Claim("band", "at chance", Source(PAPER, "x"), rate("other", "acc"), near_chance(0.5, 0.1, "toy"), "acc"),
              Claim("paired", "same data, paired", Source(PAPER, "x"),
                    minus(rate("mixer", "acc"), rate("other", "acc")), at_least(0.0), "diff"))
    register_toy([toy_recipe("toy-recompute", groups=groups, claims=claims)])
    out = tmp_path / "out"
    result = invoke("toy-recompute", "--out", str(out))
    assert result.exit_code == 0, result.output
    data = json.loads((out / "report.json").read_text())
    paired = next(c for c in data["claims"] if c["id"] == "paired")
    # both groups train seed s on the same data (seed-derived), so the difference is paired run by run
    assert paired["measurement"]["interval"] == "paired-t" and len(paired["measurement"]["per_run"]) == 3
    for claim in data["claims"]:
        assert not check_claim(claim), check_claim(claim)
    # a reader who edits one per-run value sees the report stop recomputing
    paired["measurement"]["sides"]["a"]["per_run"][0]["value"] += 0.5
    assert check_claim(paired)
