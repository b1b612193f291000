"""What the Achilles' Heel recipes (arXiv 2509.17514) share: quick budgets, the thresholds every
claim uses, and the measures of the held-out pair 43.

Thresholds, one convention for every claim of these recipes (each rule's text repeats its basis):

* *learned* a solution: accuracy ≥ 0.8 over the whole interval (the paper's figures show ≈1);
* *not learned*: ≤ 0.2 (the paper's figures show ≈0; a fifth of the "learned" level);
* *at chance* on inverse matching (five candidates, chance 0.2): within 0.2 ± 0.05. A quarter of
  chance: narrow enough that a model ruling out even one wrong candidate in four leaves the band,
  wide enough to hold one run's sampling error at 2,000 samples (Wilson half-width ≈ 0.018);
* *above chance*: ≥ 0.25, the band's upper edge;
* a *difference* a claim calls real: a stated minimum effect (0.3 between "learned" and "not
  learned", smaller where the paper's own words are weaker), paired run by run where both sides
  trained on the same data (seed ``s`` of every group draws the same samples).

Quick budgets were chosen by calibration runs on a 2-core CPU (see each recipe's departures).
"""

from __future__ import annotations

from typing import Any

from achilles.recipes import Figure, RunGroup, Selector, Until, at_least, at_most, minus, per_run, rate

from . import figures
from ..papers import ACHILLES_HEEL, ACHILLES_TRAINING

PAPER = ACHILLES_HEEL
TRAINING = ACHILLES_TRAINING
PAIRS = 16            # composite: test has 16 anchor pairs in equal shares
CHANCE_INVERSE = 0.2  # inverse: five candidate key sequences
LEARNED, NOT_LEARNED = 0.8, 0.2
BIG_EFFECT = 0.3      # "learned" vs "not learned"

LEARNED_RULE = at_least(LEARNED, "learned: the paper's ≈1, read as ≥ 0.8")
NOT_LEARNED_RULE = at_most(NOT_LEARNED, "not learned: the paper's ≈0, read as ≤ 0.2")
ABOVE_CHANCE_RULE = at_least(CHANCE_INVERSE + 0.05, "above chance 0.2 by more than the ±0.05 'at chance' band")

# -- quick budgets (calibrated on a 2-core CPU) ------------------------------------------------------
#: composite: 4 epochs of the full training set at batch 256 (about 4,400 steps) fit the seen pairs at
#: every depth tried; the paper's 200 epochs at batch 2048 are about 27,000 steps
COMPOSITE_QUICK = {"epochs": 4, "lr_peak": 1e-3, "train_samples": 280_800, "eval_samples": 4_000, "batch_size": 256}
COMPOSITE_BUDGET_TEXT = ("4 epochs of the full composite training set (280,800 samples) at batch 256 and peak lr "
                         "1e-3 (one warm-up epoch, cosine to 1e-5), about 4,400 steps, instead of 200 epochs at batch "
                         "2048 and peak lr 2.5e-4 (about 27,000 steps); 4,000 test samples per run")
#: figure 4's seeds per cell at quick (figure 12 shares its γ = 1, 2-layer cell): whether a run learns
#: 43's composite solution varies from seed to seed at this budget, and 3 left the verdicts to that spread
FIG4_SEEDS = 5
SYMMETRIC_QUICK = {"epochs": 2, "lr_peak": 1e-3, "train_samples": 256_500, "eval_samples": 4_000, "batch_size": 256}
#: inverse: the Transformer generalises from 16,000 samples (test ≈ 0.99 in 10 epochs) where standard
#: Mamba2 memorises them; the residual Mamba2 needs more data (16,000 samples: test 0.55; 40,000 x 6: 0.99),
#: so every comparison involving it trains both sides at 40,000 x 6
INVERSE_QUICK = {"epochs": 10, "lr_peak": 1e-3, "train_samples": 16_000, "eval_samples": 2_000, "batch_size": 256}
INVERSE_LARGE = {**INVERSE_QUICK, "epochs": 6, "train_samples": 40_000}
INVERSE_BUDGET_TEXT = ("16,000 training samples (the paper: 80,000) for 10 epochs, or 40,000 for 6 epochs where the "
                       "residual or gated Mamba2 is compared (both sides of every comparison get the same budget and "
                       "data), at batch 256 and peak lr 1e-3 (one warm-up epoch, cosine to 1e-5) instead of 200 "
                       "epochs at batch 1024 and 2.5e-4; 2,000 evaluation samples per split")


def cells(gammas, layers) -> dict[str, list]:
    """A gamma x depth grid. Single cells are written as one-value grids too, so that recipes
    asking for the same cell with the same budget share its runs in the run store."""
    return {"gamma": list(gammas), "n_layers": list(layers)}


#: a claim about 43 reads only the runs that learned their training pairs: a run that did not fit
#: them says nothing about which solution generalises
FITS_SEEN = Selector("runs that fit the seen pairs on test (acc_seen_pairs ≥ 0.9)",
                     lambda run: (run.final("test", "acc_seen_pairs") or 0.0) >= 0.9)
#: the probes of figures 5-6 read models that learned the composite solution (the figures' premise)
LEARNED_COMPOSITE = Selector("runs that learned the composite solution (43 composite accuracy ≥ 0.8)",
                             lambda run: run.final("test", "acc_43_composite") >= 0.8)
#: probe claims rest on at least three such models: seeds are added until three qualify (cap 9)
THREE_LEARNED = Until(LEARNED_COMPOSITE.text, LEARNED_COMPOSITE.test, need=3, cap=9)
FITS_TRAIN = Selector("runs that fit their training data (train accuracy ≥ 0.9)",
                      lambda run: run.final("train", "acc") >= 0.9)


def pair43(group: str, solution: str, gamma: float | None = None, *, where: dict | None = None) -> Any:
    """Test accuracy of the held-out pair 43 against the ``composite`` or ``symmetric`` truth (one
    pair in ``PAIRS`` of the test split), optionally at one γ, over the runs that fit the seen pairs."""
    where = dict(where or {})
    if gamma is not None:
        where["gamma"] = gamma
    return rate(group, f"acc_43_{solution}", where=where or None, share=1 / PAIRS, only=FITS_SEEN)


def composite_minus_symmetric(group: str, gamma: float | None = None) -> Any:
    """Per run (paired): 43's composite minus symmetric accuracy."""
    return minus(pair43(group, "composite", gamma), pair43(group, "symmetric", gamma))


def neither_solution(group: str, gamma: float | None = None, *, where: dict | None = None) -> Any:
    """Per run, the larger of 43's composite and symmetric accuracies ("learns neither" when low)."""
    where = dict(where or {})
    if gamma is not None:
        where["gamma"] = gamma

    def best(run) -> tuple[float, int] | None:
        c, s = run.final("test", "acc_43_composite"), run.final("test", "acc_43_symmetric")
        if c != c or s != s:  # NaN: the run reports neither
            return None
        return max(c, s), max(1, run.eval_samples("test") // PAIRS)

    cell = ", ".join(f"{k}={v}" for k, v in where.items())
    return per_run(group, best, f"{group} test: max of 43's composite and symmetric accuracy"
                   + (f" ({cell})" if cell else ""), where=where, only=FITS_SEEN)


def composite_phase_diagram(group: str, caption: str) -> Figure:
    """Figures 4 and 8: 43's composite and symmetric accuracy, and the seen pairs', per γ × depth."""
    return Figure("phase-diagram", figures.heatmaps(
        group, [("test", "acc_43_composite", "43: composite solution"),
                ("test", "acc_43_symmetric", "43: symmetric solution"),
                ("test", "acc_seen_pairs", "seen pairs (fit)")],
        title=f"{group} on composite: test accuracy, mean over seeds"), caption)


def composite_paper(group: str, arch: str, grid: dict[str, list], task: str = "composite", **extra) -> RunGroup:
    return RunGroup(group, arch, task, grid=grid, seeds=3, **extra)
