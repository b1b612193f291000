"""Achilles' Heel recipes on the composite function task: figures 4 (phase diagram), 5-6 (information
flow, blocking, substitution) and 7, 10-11 (full symmetry, all-one convolution, positional
encoding). Figures 8 and 12 (the convolution: conv-Transformer, kernel taps) are in
``achilles_conv``; thresholds in ``achilles_common``."""

from __future__ import annotations

from typing import Any

from achilles.recipes import (Claim, Figure, Plan, ProbeStep, Recipe, RunGroup, Selector, Source, at_least, at_most,
                              minus, per_run, probe_value, rate)

from . import figures
from .achilles_common import (BIG_EFFECT, COMPOSITE_BUDGET_TEXT, COMPOSITE_QUICK, FIG4_SEEDS, LEARNED_COMPOSITE,
                              LEARNED_RULE, NOT_LEARNED_RULE, PAPER, SYMMETRIC_QUICK, THREE_LEARNED, TRAINING,
                              cells, composite_minus_symmetric, composite_paper, composite_phase_diagram,
                              neither_solution, pair43)

# -- figure 4: the phase diagram ---------------------------------------------------------------------
FIG4_GAMMAS, FIG4_LAYERS = (0.5, 0.75, 1.0), (2, 3, 4)

fig4 = Recipe(
    name="achilles-fig4",
    title="Phase diagram of Mamba2 on the composite function task (γ × depth)",
    paper=PAPER, source="Figure 4, §4",
    summary=("Mamba2 is trained on the composite function task across initialization rates γ and depths; "
             "the unseen anchor pair 43 is scored against its composite (key − 10) and symmetric "
             "(key − 6, like 34) solutions. The paper finds that small γ (large initialization) learns "
             "neither, and large γ (small initialization) learns the composite solution almost everywhere; "
             "the symmetric one is (nearly) never learned."),
    plans={
        "quick": Plan(
            runs=(RunGroup("mamba2", "mamba2", "composite", grid=cells(FIG4_GAMMAS, FIG4_LAYERS), seeds=FIG4_SEEDS,
                           train=COMPOSITE_QUICK),),
            departures=("γ ∈ {0.5, 0.75, 1.0} × depth {2, 3, 4} instead of γ 0.5-1.0 in steps of 0.1 × "
                        "depth 2-6; " + COMPOSITE_BUDGET_TEXT + f"; {FIG4_SEEDS} seeds per cell where the paper has "
                        "3 (each claim pools the 15 runs of a γ column, or all 45): with 3 the γ = 1 claims were "
                        "left to seed spread (0.556 [0.254, 0.857] over 9 runs)."),
        ),
        "paper": Plan(
            runs=(composite_paper("mamba2", "mamba2", cells([0.5, 0.6, 0.7, 0.8, 0.9, 1.0], [2, 3, 4, 5, 6])),),
            training_profile="paper", departures="none intended (γ 0.5-1.0 × depth 2-6, 3 seeds, appendix D)."),
    },
    claims=(
        Claim("composite-at-large-gamma",
              "For large γ (small initialization) Mamba learns the composite solution for the unseen pair 43",
              Source(PAPER, "Fig. 4a, §4", "composite accuracy ≈1 at large γ"),
              pair43("mamba2", "composite", 1.0), LEARNED_RULE,
              "test accuracy of 43 against the composite truth at γ = 1.0, depths 2-4, runs that fit the seen pairs",
              decides="more seeds per cell, or the paper's 200-epoch budget"),
        Claim("symmetric-rare",
              "The symmetric solution for 43 is (nearly) never learned",
              Source(PAPER, "Fig. 4b, §4", "symmetric accuracy ≈0 everywhere"),
              pair43("mamba2", "symmetric"),
              at_most(0.1, "'nearly never': the paper's ≈0, read as ≤ 0.1"),
              "test accuracy of 43 against the symmetric truth, every cell, runs that fit the seen pairs"),
        Claim("composite-beats-symmetric",
              "Mamba biases the composite over the symmetric solution",
              Source(PAPER, "Fig. 4, §4", "composite ≈1 vs symmetric ≈0 at large γ"),
              composite_minus_symmetric("mamba2", 1.0),
              at_least(BIG_EFFECT, "a minimum effect of 0.3, between 'learned' and 'not learned'"),
              "composite minus symmetric accuracy of 43 at γ = 1.0, paired within each run"),
        Claim("neither-at-small-gamma",
              "For small γ (large initialization) Mamba learns neither solution",
              Source(PAPER, "Fig. 4, §4", "both accuracies ≈0 at γ = 0.5"),
              neither_solution("mamba2", 0.5), NOT_LEARNED_RULE,
              "the larger of 43's composite and symmetric test accuracies at γ = 0.5, per run, depths 2-4"),
    ),
    figures=(
        composite_phase_diagram(
            "mamba2", "Test accuracy of the held-out pair 43 against the composite and symmetric truths, and of "
            "the seen pairs, per γ (x) and depth (y); mean over seeds (figure 4)."),
    ),
    paper_budget={**TRAINING, "d_model": 32, "batch": 2048, "data": "300,000 samples (C.1)",
                  "grid": "γ 0.5-1.0 × depth 2-6", "seeds": 3},
)

# -- figures 5-6: information flow, blocking and substitution ----------------------------------------
DEEP = cells([1.0], [5])  # appendix E.1.2: five layers at γ = 1 learn the composite solution
L5_SEEDS = 5


def _downstream(control: bool):
    """Per run, a substitution rate pooled over the key positions with tokens after the anchors
    (p ≤ 5: at p = 6 the anchors end the sequence, so nothing downstream is substituted)."""
    table = "to_twin_control_by_key_position" if control else "to_twin_by_key_position"

    def value(run) -> tuple[float, int] | None:
        entries = (run.probes.get("substitution") or {}).get(table)
        if not entries:
            return None
        kept = [e for p, e in entries.items() if int(p) <= 5]
        n = sum(e["n"] for e in kept)
        return (sum(e["fraction"] * e["n"] for e in kept) / n, n) if n else None

    return value


def _substitution(control: bool) -> Any:
    what = ("random-pair substitution (control): output = the 43 twin's" if control
            else "43-twin substitution: output = the 43 twin's")
    return per_run("mamba2-l5", _downstream(control), f"{what}, key positions 1-5", only=LEARNED_COMPOSITE,
                   min_runs=3)


def _flow_excess(run) -> tuple[float, None] | None:
    """Mean over layers of (share of |S| downstream tokens draw from key+anchors − uniform share)."""
    layers = ((run.probes.get("information-flow") or {}).get("summary") or {}).get("layers")
    if not layers:
        return None
    return sum(e["share"] - e["uniform"] for e in layers) / len(layers), None


def _blocking(key: str) -> Any:
    return probe_value("mamba2-l5", "blocking", key, only=LEARNED_COMPOSITE, min_runs=3,
                       count_key=lambda r: sum(p["n"] for p in r["per_pair"].values()))


FIG6_PROBES = (ProbeStep("information-flow", "mamba2-l5", {"summary_samples": 480}),
               ProbeStep("blocking", "mamba2-l5", {"samples": 480}),
               ProbeStep("substitution", "mamba2-l5", {"samples": 480}))

fig6 = Recipe(
    name="achilles-fig6",
    title="Information flow, blocking and substitution: Mamba2 solves the composite task through its "
          "convolution, not its SSM",
    paper=PAPER, source="Figures 5-6, §4.1",
    summary=("On Mamba2 models that learned the composite solution (5 layers, γ = 1: appendix E.1.2's setting), "
             "the SSM matrix S shows little flow from the key and anchors to later tokens (figure 5); zeroing "
             "every entry S[t, s] from the key and both anchors to later tokens leaves the output almost "
             "unchanged (blocking), while giving the tokens after the anchors the post-convolution states of a "
             "43 twin makes the output collapse to the twin's (substitution). Every probe claim here rests on at "
             "least three models that learned the composite solution and is judged against its control: the "
             "uniform-reading share for the flow, a cut of as many random filler columns for blocking, and a "
             "random pair's states for substitution."),
    plans={
        "quick": Plan(
            runs=(RunGroup("mamba2-l5", "mamba2", "composite", grid=DEEP, seeds=L5_SEEDS, train=COMPOSITE_QUICK,
                           until=THREE_LEARNED),),
            probes=FIG6_PROBES,
            departures=(COMPOSITE_BUDGET_TEXT + "; 5 seeds, then one more at a time until three runs learned the "
                        "composite solution (cap: 9 seeds); 480 sequences per anchor pair as in the paper; "
                        "substitution is pooled over key positions 1-5, since at key position 6 no token follows "
                        "the anchors (the paper does not say how it treats that position)."),
        ),
        "paper": Plan(runs=(composite_paper("mamba2-l5", "mamba2", DEEP, until=THREE_LEARNED),),
                      probes=FIG6_PROBES, training_profile="paper", departures="none intended."),
    },
    claims=(
        Claim("model-learned-composite",
              "Five layers at γ = 1 learn the composite solution (the figures' premise)",
              Source(PAPER, "§4.1, E.1.2", "5 layers at γ = 1 learn the composite solution"),
              pair43("mamba2-l5", "composite"), LEARNED_RULE,
              "test composite accuracy of 43 over every run of the group that fit the seen pairs (the probes "
              "below read only the runs that learned it)",
              decides="the paper's budget: at quick only some seeds learn the composite solution"),
        Claim("ssm-flow-little",
              "Within the SSM, later tokens pay little attention to the key and anchors",
              Source(PAPER, "Fig. 5, §4.1", "little attention to the key and anchor information"),
              per_run("mamba2-l5", _flow_excess, "information-flow: share of |S| downstream tokens draw from the "
                      "key and anchors minus the share uniform reading gives (control), mean over layers",
                      only=LEARNED_COMPOSITE, min_runs=3, is_rate=False),
              at_most(0.0, "'little attention': no more than a uniform reading over earlier tokens (the control)"),
              "per run, mean over layers of (share of |S| from key+anchors − uniform share), runs that learned "
              "the composite solution",
              decides="at least three models that learned the composite solution"),
        Claim("blocking-no-worse-than-control",
              "Blocking the SSM flow from the key and anchors leaves the output as unchanged as cutting as many "
              "random filler columns does",
              Source(PAPER, "Fig. 6a, §4.1", "output ≈ identical (≈1) for every anchor pair"),
              minus(_blocking("mean_same"), _blocking("mean_same_filler_control")),
              at_least(-0.05, "the key/anchor cut changes the output at most 0.05 more often than the control "
                              "cut; the absolute shares are kept beside it in report.json"),
              "per run, share of sequences unchanged by the key/anchor cut minus the share unchanged by the "
              "filler cut (paired within the run), runs that learned the composite solution",
              decides="at least three models that learned the composite solution"),
        Claim("substitution-beyond-control",
              "Substituting downstream post-convolution states from a 43 twin collapses the output to 43's",
              Source(PAPER, "Fig. 6b, §4.1", "nearly all pairs collapse (≈1)"),
              minus(_substitution(False), _substitution(True)),
              at_least(0.5, "most sequences collapse to 43's output that a random pair's states do not move "
                            "there: a minimum effect of 0.5 over the control"),
              "per run, key positions 1-5: share whose output equals the 43 twin's after the 43 twin's states "
              "minus the same share after a random pair's states (paired within the run)",
              decides="at least three models that learned the composite solution"),
    ),
    figures=(
        Figure("substitution-by-position", figures.probe_by_position(
            "mamba2-l5", "substitution", "to_twin_by_key_position",
            title="Substitution: output = 43 twin's, by key position",
            ylabel="output collapses to the 43 twin's", only=LEARNED_COMPOSITE),
            "Substitution by key position, runs that learned the composite solution: at p = 6 no token follows "
            "the anchors, so nothing is substituted."),
        Figure("blocking-by-position", figures.probe_by_position(
            "mamba2-l5", "blocking", "same_by_key_position",
            title="Blocking: output unchanged, by key position", ylabel="output unchanged",
            only=LEARNED_COMPOSITE),
            "Blocking by key position, runs that learned the composite solution."),
    ),
    paper_budget={**TRAINING, "d_model": 32, "layers": 5, "γ": 1.0, "sequences per pair": 480},
)

# -- figures 7 and 10-11: full symmetry, all-one convolution, positional encoding --------------------
SHALLOW = cells([0.5], [2])  # E.1.3: two layers at γ = 0.5 learn neither solution
FITS_34 = Selector("runs that fit 34 (test accuracy of pair 34 ≥ 0.9)",
                   lambda run: run.final("test", "acc_pair_34") >= 0.9)


def _full_symmetry_43(layers: int) -> Any:
    return rate("full-symmetry", "acc_43_symmetric", where={"n_layers": layers}, share=1 / 20, only=FITS_34)


fig7 = Recipe(
    name="achilles-fig7",
    title="The convolution's asymmetry: full symmetry fails, all-one convolution and positional encoding "
          "bring the symmetric solution",
    paper=PAPER, source="Figures 7, 10-11, §4.2",
    summary=("(a) Under full symmetry (every pair's function equals its mirror's; 43 held out) Mamba2 fits 34 "
             "but not 43, at every depth the paper tries (figures 10-11). (b) With the convolution kernel fixed "
             "to all ones (5 layers, γ = 1), Mamba2 learns the symmetric solution where the standard one learns "
             "the composite. (c) With a learned positional encoding at γ = 0.5 (2 layers), Mamba2 learns the "
             "symmetric solution where the standard one learns neither. Each variant is compared with the "
             "standard Mamba2 trained on the same data (seed by seed)."),
    plans={
        "quick": Plan(
            runs=(RunGroup("full-symmetry", "mamba2", "composite-symmetric", grid=cells([0.5], (2, 3)), seeds=3,
                           train=SYMMETRIC_QUICK),
                  RunGroup("allone-l5", "mamba2-allone", "composite", grid=DEEP, seeds=L5_SEEDS,
                           train=COMPOSITE_QUICK),
                  RunGroup("mamba2-l5", "mamba2", "composite", grid=DEEP, seeds=L5_SEEDS, train=COMPOSITE_QUICK),
                  RunGroup("posenc-l2", "mamba2-posenc", "composite", grid=SHALLOW, seeds=L5_SEEDS,
                           train=COMPOSITE_QUICK),
                  RunGroup("mamba2-l2", "mamba2", "composite", grid=SHALLOW, seeds=L5_SEEDS, train=COMPOSITE_QUICK)),
            departures=("Full symmetry at depths 2 and 3 (the paper: 2-6) with d_model 128, 2 epochs of its training "
                        "set (256,500 samples) at batch 256, 3 seeds per depth; the composite runs: "
                        + COMPOSITE_BUDGET_TEXT + ", 5 seeds (shared with achilles-fig4 and achilles-fig6)."),
        ),
        "paper": Plan(
            runs=(composite_paper("full-symmetry", "mamba2", cells([0.5], [2, 3, 4, 5, 6]), task="composite-symmetric"),
                  composite_paper("allone-l5", "mamba2-allone", DEEP),
                  composite_paper("mamba2-l5", "mamba2", DEEP),
                  composite_paper("posenc-l2", "mamba2-posenc", SHALLOW),
                  composite_paper("mamba2-l2", "mamba2", SHALLOW)),
            training_profile="paper", departures="none intended."),
    },
    claims=(
        Claim("full-symmetry-fits-34",
              "Under full symmetry Mamba reaches 100% on the test data of 34",
              Source(PAPER, "Fig. 7a, §4.2", "100% on 34"),
              rate("full-symmetry", "acc_pair_34", share=1 / 20),
              at_least(0.9, "the paper's 100%, read as ≥ 0.9"),
              "test accuracy of pair 34 under full symmetry, depths 2 and 3"),
        Claim("full-symmetry-fails-43",
              "Under full symmetry Mamba fails to learn 43 through the symmetry with 34 (2 layers)",
              Source(PAPER, "Fig. 7a, §4.2", "fails (43 ≈ 0)"),
              _full_symmetry_43(2), NOT_LEARNED_RULE,
              "test accuracy of 43 against its only consistent (symmetric) truth, 2 layers, runs that fit 34"),
        Claim("full-symmetry-fails-43-deeper",
              "... and still fails with more layers",
              Source(PAPER, "Figs. 10-11, E.1.1", "fails at every depth and seed (2-6 layers)"),
              _full_symmetry_43(3), NOT_LEARNED_RULE,
              "test accuracy of 43 against its symmetric truth, 3 layers (this profile's deepest), runs that fit 34",
              decides="depths 4-6 need the paper profile"),
        Claim("allone-symmetric",
              "With an all-one convolution kernel Mamba learns the symmetric solution",
              Source(PAPER, "Fig. 7b, §4.2", "symmetric accuracy ≈1 (1conv1d)"),
              pair43("allone-l5", "symmetric"), LEARNED_RULE,
              "test symmetric accuracy of 43, mamba2-allone (5 layers, γ = 1), runs that fit the seen pairs"),
        Claim("allone-vs-standard",
              "... where the standard Mamba with its trained convolution does not",
              Source(PAPER, "Fig. 7b, §4.2", "standard structure: composite, not symmetric"),
              minus(pair43("allone-l5", "symmetric"), pair43("mamba2-l5", "symmetric")),
              at_least(BIG_EFFECT, "a minimum effect of 0.3, between 'learned' and 'not learned'"),
              "symmetric accuracy of 43: all-one minus standard mamba2 (5 layers, γ = 1), paired by seed (same data)"),
        Claim("posenc-symmetric",
              "With positional encoding Mamba at γ = 0.5 learns the symmetric solution",
              Source(PAPER, "Fig. 7c, §4.2, E.1.3", "symmetric accuracy ≈1 (Pos.)"),
              pair43("posenc-l2", "symmetric"), LEARNED_RULE,
              "test symmetric accuracy of 43, mamba2-posenc (2 layers, γ = 0.5), runs that fit the seen pairs"),
        Claim("posenc-vs-standard",
              "... where the same Mamba without it does not",
              Source(PAPER, "Fig. 7c, §4.2, E.1.3", "standard at γ = 0.5: neither solution"),
              minus(pair43("posenc-l2", "symmetric"), pair43("mamba2-l2", "symmetric")),
              at_least(BIG_EFFECT, "a minimum effect of 0.3, between 'learned' and 'not learned'"),
              "symmetric accuracy of 43: posenc minus standard mamba2 (2 layers, γ = 0.5), paired by seed"),
    ),
    figures=(
        Figure("solutions", figures.bars(
            [("allone-l5", "all-one conv\n(5 layers, γ 1)"), ("mamba2-l5", "standard\n(5 layers, γ 1)"),
             ("posenc-l2", "pos. encoding\n(2 layers, γ 0.5)"), ("mamba2-l2", "standard\n(2 layers, γ 0.5)")],
            [("test", "acc_43_composite", None, "43: composite"), ("test", "acc_43_symmetric", None, "43: symmetric"),
             ("test", "acc_seen_pairs", None, "seen pairs")],
            title="Which solution does 43 get? (figure 7b, 7c)"),
            "Test accuracy of 43 against the composite and symmetric truths, and of the seen pairs; bars are "
            "means over seeds, dots single runs."),
        Figure("full-symmetry", figures.bars(
            [("full-symmetry", "mamba2, full symmetry")],
            [("test", "acc_pair_34", None, "34"), ("test", "acc_43_symmetric", None, "43 (symmetric = only truth)"),
             ("test", "acc_seen_pairs", None, "seen pairs")],
            title="Full symmetry (figures 7a, 10-11)"),
            "Under full symmetry, test accuracy of 34, of 43 against its symmetric truth and of the seen pairs "
            "(depths 2 and 3 pooled; the report's claims split them)."),
    ),
    paper_budget={**TRAINING, "d_model": "32 (128 for full symmetry)", "seeds": 3},
    fixed_subject="figure 7 compares Mamba2 variants (all-one convolution, positional encoding) with standard "
                  "Mamba2; another architecture has no such variants",
)

RECIPES = (fig4, fig6, fig7)
