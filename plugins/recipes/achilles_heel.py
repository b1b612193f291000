"""Recipes for Achilles' Heel of Mamba (arXiv 2509.17514): figures 4, 6, 7, 8, 9, 12, 13 and 17.

Every ``quick`` budget below was chosen by calibration runs on a 2-core CPU so that the finding
can show (or visibly fail to show) in minutes per run; each recipe's ``departures`` says how it
differs from the paper. The ``paper`` plans follow appendices C-E: the task's paper sizes,
appendix D's 200-epoch schedule, d_model 32 (composite) / 128 (inverse, full symmetry), 3 seeds.
"""

from __future__ import annotations

from typing import Any

from achilles.recipes import (Claim, Figure, Plan, Precondition, ProbeStep, Recipe, RecipeResults, RunGroup,
                              Selector, Source, at_least, at_most, minus, probe_value, rate, share_of_cells)
from achilles.recipes.measure import Measurement, rate_measurement

from . import figures
from ..papers import ACHILLES_HEEL, ACHILLES_TRAINING

PAPER = ACHILLES_HEEL
PAIRS = 16            # composite: test has 16 anchor pairs in equal shares
CHANCE_INVERSE = 0.2  # inverse: five candidate key sequences

# -- quick budgets (calibrated on a 2-core CPU; see each recipe's departures) ----------------------
#: composite: 4 epochs of the full training set at batch 256 (about 4,400 steps) fit the seen pairs at
#: every depth tried; the paper's 200 epochs at batch 2048 are about 27,000 steps
COMPOSITE_QUICK = {"epochs": 4, "lr_peak": 1e-3, "train_samples": 280_800, "eval_samples": 4_000, "batch_size": 256}
COMPOSITE_BUDGET_TEXT = ("4 epochs of the full composite training set (280,800 samples) at batch 256 and peak lr "
                         "1e-3 (one warm-up epoch, cosine to 1e-5), about 4,400 steps, instead of 200 epochs at batch "
                         "2048 and peak lr 2.5e-4 (about 27,000 steps); 4,000 test samples per run")
SYMMETRIC_QUICK = {"epochs": 2, "lr_peak": 1e-3, "train_samples": 256_500, "eval_samples": 4_000, "batch_size": 256}
#: inverse, calibrated on 2 cores: the Transformer generalises from 16,000 samples (test ≈ 0.99 in 10
#: epochs) where standard Mamba2 memorises them (train ≈ 1.0, test ≈ chance); the residual Mamba2 needs
#: more data (16,000 samples: test 0.55; 40,000 x 6 epochs: 0.99)
INVERSE_QUICK = {"epochs": 10, "lr_peak": 1e-3, "train_samples": 16_000, "eval_samples": 2_000, "batch_size": 256}
INVERSE_RESIDUAL_QUICK = {**INVERSE_QUICK, "epochs": 6, "train_samples": 40_000}
INVERSE_BUDGET_TEXT = ("16,000 training samples (the paper: 80,000) for 10 epochs at batch 256 and peak lr 1e-3 "
                       "(one warm-up epoch, cosine to 1e-5) instead of 200 epochs at batch 1024 and 2.5e-4; the "
                       "residual Mamba2 gets 40,000 samples for 6 epochs, since 16,000 samples leave it at test "
                       "≈ 0.55 in calibration; 2,000 evaluation samples per split")


def cells(gammas, layers) -> dict[str, list]:
    """A gamma x depth grid. Single cells are written as one-value grids too, so that recipes
    asking for the same cell with the same budget share its runs in the run store."""
    return {"gamma": list(gammas), "n_layers": list(layers)}


#: a claim about 43 reads only the runs that learned their training pairs: a run that did not fit
#: them says nothing about which solution generalises (and one such seed would otherwise decide it)
FITS_SEEN = Selector("runs that fit the seen pairs on test (acc_seen_pairs ≥ 0.9)",
                     lambda run: (run.final("test", "acc_seen_pairs") or 0.0) >= 0.9)


def pair43(group: str, solution: str, gamma: float | None = None) -> Any:
    """Test accuracy of the held-out pair 43 against the ``composite`` or ``symmetric`` truth
    (one pair in ``PAIRS`` of the test split), optionally at one γ, over the runs that fit the seen pairs."""
    return rate(group, f"acc_43_{solution}", where=None if gamma is None else {"gamma": gamma}, share=1 / PAIRS,
                only=FITS_SEEN)


def composite_minus_symmetric(group: str, gamma: float | None = None) -> Any:
    return minus(pair43(group, "composite", gamma), pair43(group, "symmetric", gamma))


def composite_phase_diagram(group: str, caption: str) -> Figure:
    """Figures 4 and 8: 43's composite and symmetric accuracy, and the seen pairs', per γ × depth."""
    return Figure("phase-diagram", figures.heatmaps(
        group, [("test", "acc_43_composite", "43: composite solution"),
                ("test", "acc_43_symmetric", "43: symmetric solution"),
                ("test", "acc_seen_pairs", "seen pairs (fit)")],
        title=f"{group} on composite: test accuracy, mean over seeds"), caption)


def composite_paper(group: str, arch: str, grid: dict[str, list], task: str = "composite") -> RunGroup:
    return RunGroup(group, arch, task, grid=grid, seeds=3)


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
            runs=(RunGroup("mamba2", "mamba2", "composite", grid=cells(FIG4_GAMMAS, FIG4_LAYERS), seeds=3,
                           train=COMPOSITE_QUICK),),
            departures=("γ ∈ {0.5, 0.75, 1.0} × depth {2, 3, 4} instead of γ 0.5-1.0 in steps of 0.1 × "
                        "depth 2-6; " + COMPOSITE_BUDGET_TEXT + "; 3 seeds as in the paper."),
        ),
        "paper": Plan(
            runs=(composite_paper("mamba2", "mamba2", cells([0.5, 0.6, 0.7, 0.8, 0.9, 1.0], [2, 3, 4, 5, 6])),),
            training_profile="paper", departures="none intended (γ 0.5-1.0 × depth 2-6, 3 seeds, appendix D)."),
    },
    claims=(
        Claim("composite-at-large-gamma",
              "For large γ (small initialization) Mamba learns the composite solution for the unseen pair 43",
              Source(PAPER, "Fig. 4a, §4", "composite accuracy near 1 at large γ"),
              pair43("mamba2", "composite", 1.0), at_least(0.5),
              "test accuracy of 43 against the composite truth at γ = 1.0, all depths and seeds pooled"),
        Claim("symmetric-rare",
              "The symmetric solution for 43 is (nearly) never learned",
              Source(PAPER, "Fig. 4b, §4", "symmetric accuracy near 0 everywhere"),
              pair43("mamba2", "symmetric"), at_most(0.2),
              "test accuracy of 43 against the symmetric truth, every cell and seed pooled"),
        Claim("composite-beats-symmetric",
              "Mamba biases the composite over the symmetric solution",
              Source(PAPER, "Fig. 4, §4"),
              composite_minus_symmetric("mamba2", 1.0),
              at_least(0.0), "composite minus symmetric accuracy of 43 at γ = 1.0"),
        Claim("neither-at-small-gamma",
              "For small γ (large initialization) Mamba learns neither solution",
              Source(PAPER, "Fig. 4, §4", "both accuracies low at γ = 0.5"),
              pair43("mamba2", "composite", 0.5), at_most(0.2),
              "test composite accuracy of 43 at γ = 0.5 (the symmetric one is covered by symmetric-rare)"),
    ),
    figures=(
        composite_phase_diagram(
            "mamba2", "Test accuracy of the held-out pair 43 against the composite and symmetric truths, and of "
            "the seen pairs, per γ (x) and depth (y); mean over seeds (figure 4)."),
    ),
    paper_budget={**ACHILLES_TRAINING, "d_model": 32, "batch": 2048, "data": "300,000 samples (C.1)",
                  "grid": "γ 0.5-1.0 × depth 2-6", "seeds": 3},
)

# -- figure 6: blocking and substitution -------------------------------------------------------------
DEEP = cells([1.0], [5])  # appendix E.1.2: five layers at γ = 1 learn the composite solution


#: the probes of figure 6 read models that learned the composite solution (the figure's premise)
LEARNED_COMPOSITE = Selector("43 composite accuracy ≥ 0.8",
                             lambda run: run.final("test", "acc_43_composite") >= 0.8)


def _downstream_substitution(group: str) -> Any:
    """Substitution pooled over the key positions that have tokens after the anchors (p ≤ 5): at
    p = 6 the anchors end the sequence, so there is nothing downstream to substitute. Only runs
    that learned the composite solution count."""

    def measure(results: RecipeResults) -> Measurement:
        rates, counts = [], []
        runs, missing, note = results.selected(group, only=LEARNED_COMPOSITE)
        for run in runs:
            table = (run.probes.get("substitution") or {}).get("to_twin_by_key_position")
            if not table:
                missing.append(f"{run.label} (no substitution result)")
                continue
            hit = sum(e["fraction"] * e["n"] for p, e in table.items() if int(p) <= 5)
            n = sum(e["n"] for p, e in table.items() if int(p) <= 5)
            rates.append(hit / n if n else float("nan"))
            counts.append(n)
        return rate_measurement(rates, counts, f"{group} substitution, key positions 1-5; {note}", missing)

    return measure


fig6 = Recipe(
    name="achilles-fig6",
    title="Blocking and substitution: Mamba2 solves the composite task through its convolution, not its SSM",
    paper=PAPER, source="Figures 5-6, §4.1",
    summary=("On a Mamba2 that learned the composite solution (5 layers, γ = 1: appendix E.1.2's setting), "
             "zeroing every SSM entry S[t, s] from the key and both anchors to later tokens leaves the output "
             "almost unchanged (blocking), while replacing the post-convolution states of the tokens after "
             "the anchors with those of a 43 twin makes the output collapse to the twin's (substitution)."),
    plans={
        "quick": Plan(
            runs=(RunGroup("mamba2-l5", "mamba2", "composite", grid=DEEP, seeds=3, train=COMPOSITE_QUICK),),
            probes=(ProbeStep("blocking", "mamba2-l5", {"samples": 480}),
                    ProbeStep("substitution", "mamba2-l5", {"samples": 480})),
            departures=(COMPOSITE_BUDGET_TEXT + "; "
                        "480 sequences per anchor pair as in the paper; substitution is reported by key "
                        "position and its claim pools positions 1-5, since at key position 6 no token "
                        "follows the anchors (the paper does not say how it treats that position)."),
        ),
        "paper": Plan(runs=(composite_paper("mamba2-l5", "mamba2", DEEP),),
                      probes=(ProbeStep("blocking", "mamba2-l5", {"samples": 480}),
                              ProbeStep("substitution", "mamba2-l5", {"samples": 480})),
                      training_profile="paper", departures="none intended."),
    },
    claims=(
        Claim("model-learned-composite",
              "Five layers at γ = 1 learn the composite solution (the figure's premise)",
              Source(PAPER, "§4.1, E.1.2", "5 layers at γ = 1 learn the composite solution"),
              pair43("mamba2-l5", "composite"), at_least(0.8),
              "test composite accuracy of 43"),
        Claim("blocking-output-unchanged",
              "Blocking the SSM flow from key and anchors leaves the output nearly identical",
              Source(PAPER, "Fig. 6a", "≈1 for every anchor pair"),
              probe_value("mamba2-l5", "blocking", "mean_same", only=LEARNED_COMPOSITE,
                          count_key=lambda r: sum(p["n"] for p in r["per_pair"].values())), at_least(0.9),
              "share of sequences whose output is unchanged when S[t, s] = 0 for s ∈ {key, anchors}, "
              "t > s, all layers; mean over pairs, then over the runs that learned the composite solution"),
        Claim("substitution-collapses-to-43",
              "Substituting downstream post-convolution states from a 43 twin collapses the output to 43's",
              Source(PAPER, "Fig. 6b", "nearly all pairs collapse"),
              _downstream_substitution("mamba2-l5"), at_least(0.9),
              "share of sequences (key positions 1-5) whose output equals their 43 twin's after substitution, "
              "runs that learned the composite solution"),
    ),
    figures=(
        Figure("substitution-by-position", figures.probe_by_position(
            "mamba2-l5", "substitution", "to_twin_by_key_position",
            title="Substitution: output = 43 twin's, by key position",
            ylabel="output collapses to the 43 twin's", only=LEARNED_COMPOSITE),
            "Substitution by key position: at p = 6 no token follows the anchors, so nothing is substituted."),
        Figure("blocking-by-position", figures.probe_by_position(
            "mamba2-l5", "blocking", "same_by_key_position",
            title="Blocking: output unchanged, by key position", ylabel="output unchanged",
            only=LEARNED_COMPOSITE),
            "Blocking by key position."),
    ),
    paper_budget={**ACHILLES_TRAINING, "d_model": 32, "layers": 5, "γ": 1.0, "sequences per pair": 480},
)

# -- figure 7: full symmetry, all-one convolution, positional encoding --------------------------------
SHALLOW = cells([0.5], [2])  # E.1.3: two layers at γ = 0.5 learn neither solution
SYM_LAYERS = (2,)

fig7 = Recipe(
    name="achilles-fig7",
    title="The convolution's asymmetry: full symmetry fails, all-one convolution and positional encoding "
          "bring the symmetric solution",
    paper=PAPER, source="Figure 7, §4.2",
    summary=("(a) Under full symmetry (every pair's function equals its mirror's; 43 held out) Mamba2 fits 34 "
             "but not 43. (b) With the convolution kernel fixed to all ones (5 layers, γ = 1), Mamba2 learns "
             "the symmetric solution where the standard one learns the composite. (c) With a learned "
             "positional encoding at γ = 0.5 (2 layers), Mamba2 learns the symmetric solution where the "
             "standard one learns neither."),
    plans={
        "quick": Plan(
            runs=(RunGroup("full-symmetry", "mamba2", "composite-symmetric", grid=cells([0.5], SYM_LAYERS), seeds=3,
                           train=SYMMETRIC_QUICK),
                  RunGroup("allone-l5", "mamba2-allone", "composite", grid=DEEP, seeds=3, train=COMPOSITE_QUICK),
                  RunGroup("mamba2-l5", "mamba2", "composite", grid=DEEP, seeds=3, train=COMPOSITE_QUICK),
                  RunGroup("posenc-l2", "mamba2-posenc", "composite", grid=SHALLOW, seeds=3, train=COMPOSITE_QUICK),
                  RunGroup("mamba2-l2", "mamba2", "composite", grid=SHALLOW, seeds=3, train=COMPOSITE_QUICK)),
            departures=("Full symmetry at depth 2 only (the paper: 2-6) with d_model 128, 2 epochs of its training "
                        "set (256,500 samples) at batch 256; "
                        "the composite runs: " + COMPOSITE_BUDGET_TEXT + " (shared with achilles-fig4 and "
                        "achilles-fig6)."),
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
              rate("full-symmetry", "acc_pair_34", share=1 / 20), at_least(0.9),
              "test accuracy of pair 34 (full symmetry)"),
        Claim("full-symmetry-fails-43",
              "Under full symmetry Mamba fails to learn 43 through the symmetry with 34",
              Source(PAPER, "Fig. 7a, §4.2, Figs. 10-11", "fails at every depth"),
              rate("full-symmetry", "acc_43_symmetric", share=1 / 20), at_most(0.2),
              "test accuracy of 43 against its only consistent (symmetric) truth",
              requires=(Precondition("the model fits 34 (≥ 0.9), so 43's symmetric answer is available",
                                     rate("full-symmetry", "acc_pair_34", share=1 / 20), at_least(0.9)),)),
        Claim("allone-symmetric",
              "With an all-one convolution kernel Mamba learns the symmetric solution",
              Source(PAPER, "Fig. 7b, §4.2"),
              pair43("allone-l5", "symmetric"), at_least(0.5),
              "test symmetric accuracy of 43, mamba2-allone (5 layers, γ = 1)"),
        Claim("standard-composite-at-l5",
              "With its trained convolution the same Mamba learns the composite solution",
              Source(PAPER, "Fig. 7b, §4.2"),
              composite_minus_symmetric("mamba2-l5"), at_least(0.0),
              "composite minus symmetric test accuracy of 43, standard mamba2 (5 layers, γ = 1)"),
        Claim("posenc-symmetric",
              "With positional encoding Mamba at γ = 0.5 learns the symmetric solution",
              Source(PAPER, "Fig. 7c, §4.2"),
              pair43("posenc-l2", "symmetric"), at_least(0.5),
              "test symmetric accuracy of 43, mamba2-posenc (2 layers, γ = 0.5)"),
        Claim("standard-neither-at-small-gamma",
              "Without positional encoding the same Mamba learns neither solution",
              Source(PAPER, "Fig. 7c, §4.2, E.1.3"),
              pair43("mamba2-l2", "composite"), at_most(0.2),
              "test composite accuracy of 43, standard mamba2 (2 layers, γ = 0.5); its symmetric accuracy is "
              "in the figure"),
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
            title="Full symmetry (figure 7a)"),
            "Under full symmetry, test accuracy of 34, of 43 against its symmetric truth and of the seen pairs."),
    ),
    paper_budget={**ACHILLES_TRAINING, "d_model": "32 (128 for full symmetry)", "seeds": 3},
)

# -- figure 8: conv-Transformer phase diagram --------------------------------------------------------
fig8 = Recipe(
    name="achilles-fig8",
    title="A Transformer with a convolution before attention: which solution does it learn?",
    paper=PAPER, source="Figure 8, §4.3",
    summary=("A causal convolution (with SiLU) inserted before attention, applied to Q, K and V as Mamba applies "
             "its convolution before the SSM. The paper's text says two things that cannot both hold: that "
             "this Transformer 'either can not generalize for small γ or fit data by symmetric solution for "
             "relative large γ', and, in the next sentence, that it 'exhibits a similar preference for composite "
             "function solutions as Mamba and struggles to learn symmetric solutions'. Both readings are checked "
             "as separate claims; the runs decide which one this budget supports."),
    plans={
        "quick": Plan(
            runs=(RunGroup("conv-transformer", "conv-transformer", "composite", grid=cells([0.5, 1.0], [2]),
                           seeds=3, train=COMPOSITE_QUICK),),
            departures=("γ ∈ {0.5, 1.0} at depth 2 instead of γ 0.5-1.0 × depth 2-6; "
                        + COMPOSITE_BUDGET_TEXT + "; 3 seeds.")),
        "paper": Plan(runs=(composite_paper("conv-transformer", "conv-transformer",
                                            cells([0.5, 0.6, 0.7, 0.8, 0.9, 1.0], [2, 3, 4, 5, 6])),),
                      training_profile="paper", departures="none intended."),
    },
    claims=(
        Claim("symmetric-at-large-gamma",
              "For relatively large γ the conv-Transformer fits the data by the symmetric solution (§4.3, first reading)",
              Source(PAPER, "§4.3, Fig. 8"),
              pair43("conv-transformer", "symmetric", 1.0), at_least(0.5),
              "test symmetric accuracy of 43 at γ = 1.0"),
        Claim("composite-like-mamba",
              "The conv-Transformer prefers the composite solution, as Mamba does (§4.3, second reading)",
              Source(PAPER, "§4.3, Fig. 8"),
              composite_minus_symmetric("conv-transformer", 1.0),
              at_least(0.0), "composite minus symmetric test accuracy of 43 at γ = 1.0"),
        Claim("no-generalisation-at-small-gamma",
              "For small γ the conv-Transformer does not generalise to 43",
              Source(PAPER, "§4.3, Fig. 8"),
              pair43("conv-transformer", "symmetric", 0.5), at_most(0.2),
              "test symmetric accuracy of 43 at γ = 0.5 (its composite accuracy is in the figure)"),
    ),
    figures=(
        composite_phase_diagram("conv-transformer", "Figure 8: per γ (x) and depth (y), mean over seeds."),
    ),
    paper_budget={**ACHILLES_TRAINING, "d_model": 32, "grid": "γ 0.5-1.0 × depth 2-6", "seeds": 3},
)

# -- figure 9: inverse sequence matching --------------------------------------------------------------
INVERSE_ARCHS = (("mamba2", "mamba2"), ("transformer", "transformer"), ("mamba2-residual", "mamba2-residual"))

fig9 = Recipe(
    name="achilles-fig9",
    title="Inverse sequence matching: Mamba2 fails, the Transformer and the residual Mamba2 generalise",
    paper=PAPER, source="Figure 9, §5",
    summary=("The model must find which of five key sequences is the reverse of the query. Standard Mamba2 "
             "fits its training set but stays at chance (20%) on test and OOD; the Transformer and Mamba2 "
             "with a residual connection around the convolution (plus positional encoding) generalise to "
             "test, and beat chance on OOD values."),
    plans={
        "quick": Plan(
            runs=(RunGroup("mamba2", "mamba2", "inverse", grid=cells([0.5], [2]), seeds=3, train=INVERSE_QUICK),
                  RunGroup("transformer", "transformer", "inverse", grid=cells([0.5], [2]), seeds=3,
                           train=INVERSE_QUICK),
                  RunGroup("mamba2-residual", "mamba2-residual", "inverse", grid=cells([0.5], [2]), seeds=3,
                           train=INVERSE_RESIDUAL_QUICK)),
            departures=(INVERSE_BUDGET_TEXT + ". Standard Mamba2 and the Transformer see the same 16,000 "
                        "samples, so 'fits the training set but not the test set' is measured side by side with "
                        "a model that generalises from the same data."),
        ),
        "paper": Plan(runs=tuple(RunGroup(name, arch, "inverse", grid=cells([0.5], [2]), seeds=3)
                                 for name, arch in INVERSE_ARCHS),
                      training_profile="paper", departures="none intended (2 layers, γ = 0.5, d_model 128)."),
    },
    claims=(
        Claim("mamba2-test-at-chance",
              "Standard Mamba2 predicts test cases at random-guess level",
              Source(PAPER, "Fig. 9a, §5", "test ≈ 20% (chance)"),
              rate("mamba2", "acc", split="test"), at_most(CHANCE_INVERSE + 0.1),
              "mamba2 test accuracy (chance 0.2)"),
        Claim("mamba2-ood-at-chance",
              "... and OOD cases at random-guess level",
              Source(PAPER, "Fig. 9a, §5", "OOD ≈ 20%"),
              rate("mamba2", "acc", split="ood"), at_most(CHANCE_INVERSE + 0.1), "mamba2 OOD accuracy"),
        Claim("mamba2-fits-train",
              "Standard Mamba2's training accuracy easily reaches 100%",
              Source(PAPER, "Fig. 9a, §5", "train 100%"),
              rate("mamba2", "acc", split="train"), at_least(0.95),
              "mamba2 train accuracy (16,000 training samples, see departures)"),
        Claim("mamba2-memorises-not-generalises",
              "... while its test accuracy stays at chance",
              Source(PAPER, "Fig. 9a, §5"),
              rate("mamba2", "acc", split="test"), at_most(CHANCE_INVERSE + 0.1),
              "test accuracy of the same mamba2 runs"),
        Claim("transformer-generalises",
              "The Transformer accurately predicts test cases",
              Source(PAPER, "Fig. 9b, §5"),
              rate("transformer", "acc", split="test"), at_least(0.8), "transformer test accuracy"),
        Claim("residual-generalises",
              "Mamba2 with the residual connection (and positional encoding) accurately predicts test cases",
              Source(PAPER, "Fig. 9c, §5"),
              rate("mamba2-residual", "acc", split="test"), at_least(0.8), "mamba2-residual test accuracy"),
        Claim("transformer-ood-above-chance",
              "On OOD values the Transformer is significantly above chance",
              Source(PAPER, "Fig. 9b, §5"),
              rate("transformer", "acc", split="ood"), at_least(CHANCE_INVERSE + 0.05),
              "transformer OOD accuracy"),
        Claim("residual-ood-above-chance",
              "On OOD values the residual Mamba2 is significantly above chance",
              Source(PAPER, "Fig. 9c, §5"),
              rate("mamba2-residual", "acc", split="ood"), at_least(CHANCE_INVERSE + 0.05),
              "mamba2-residual OOD accuracy"),
    ),
    figures=(
        Figure("accuracy", figures.bars(
            [("mamba2", "mamba2"), ("transformer", "transformer"), ("mamba2-residual", "mamba2-residual"),
],
            [("train", "acc", None, "train"), ("test", "acc", None, "test"), ("ood", "acc", None, "OOD")],
            title="Inverse sequence matching (figure 9)", chance=CHANCE_INVERSE),
            "Final train, test and OOD accuracy; bars are means over seeds, dots single runs."),
        Figure("test-curves", figures.curves(
            [("mamba2", "mamba2"), ("transformer", "transformer"), ("mamba2-residual", "mamba2-residual")],
            "test", "acc", title="Test accuracy per epoch (mean over seeds, band = min..max)",
            chance=CHANCE_INVERSE),
            "Test accuracy during training."),
    ),
    paper_budget={**ACHILLES_TRAINING, "d_model": 128, "layers": 2, "batch": 1024,
                  "data": "100,000 samples, 80/10/10 (C.2)"},
)

# -- figure 13: Mamba2 fails across depth and γ ------------------------------------------------------
FIG13_GAMMAS, FIG13_LAYERS = (0.5, 0.75, 1.0), (2, 3)

fig13 = Recipe(
    name="achilles-fig13",
    title="Mamba2 fails inverse sequence matching across depth and initialization",
    paper=PAPER, source="Figures 13-14, E.2",
    summary=("Across depths and initialization rates, standard Mamba2 fails the inverse sequence matching task "
             "under nearly all configurations. A Transformer trained on the same data with the same budget "
             "shows that the budget itself suffices."),
    plans={
        "quick": Plan(
            runs=(RunGroup("mamba2", "mamba2", "inverse", grid=cells(FIG13_GAMMAS, FIG13_LAYERS), seeds=1,
                           train=INVERSE_QUICK),
                  RunGroup("transformer", "transformer", "inverse", grid=cells([0.5], [2]), seeds=3,
                           train=INVERSE_QUICK)),
            departures=("γ ∈ {0.5, 0.75, 1.0} × depth {2, 3} with one seed per cell instead of γ 0.5-1.0 × depth "
                        "2-5 with 3 seeds; " + INVERSE_BUDGET_TEXT + ". The control is the Transformer on the "
                        "same data and budget (the paper's figures 15-16 use the residual Mamba2, which needs more "
                        "data at this budget); the γ 0.5, depth 2 cell and the control share their runs with "
                        "achilles-fig9."),
        ),
        "paper": Plan(runs=(RunGroup("mamba2", "mamba2", "inverse",
                                     grid=cells([0.5, 0.6, 0.7, 0.8, 0.9, 1.0], [2, 3, 4, 5]), seeds=3),
                            RunGroup("mamba2-residual", "mamba2-residual", "inverse", grid=cells([0.5], [2]), seeds=3)),
                      training_profile="paper", departures="none intended."),
    },
    claims=(
        Claim("fails-nearly-everywhere",
              "Mamba2 fails the inverse sequence matching task under nearly all configurations",
              Source(PAPER, "Fig. 13, E.2", "near chance in nearly every cell"),
              share_of_cells("mamba2", "acc", lambda v: v <= CHANCE_INVERSE + 0.1, "≤ 0.3"), at_least(0.7),
              "share of γ × depth cells whose mean test accuracy is at most 0.3 (chance 0.2)"),
        Claim("budget-suffices",
              "(control) The same data and budget let another architecture generalise",
              Source(PAPER, "Fig. 9b, §5"),
              rate("transformer", "acc", split="test"), at_least(0.8),
              "transformer test accuracy at 2 layers, γ = 0.5, same data and budget"),
    ),
    figures=(
        Figure("phase-diagram", figures.heatmaps(
            "mamba2", [("test", "acc", "test accuracy"), ("train", "acc", "train accuracy")],
            title="mamba2 on inverse (chance 0.2)"),
            "Figure 13: test and train accuracy per γ (x) and depth (y)."),
    ),
    paper_budget={**ACHILLES_TRAINING, "d_model": 128, "batch": 1024, "grid": "γ 0.5-1.0 × depth 2-5"},
)

# -- figure 17: gated residual -----------------------------------------------------------------------
GATED_GAMMAS = (0.5, 1.0)

gated = Recipe(
    name="achilles-gated",
    title="Injecting raw tokens through a gate also lets Mamba2 match reversed sequences",
    paper=PAPER, source="Figure 17, E.2",
    summary=("The gated variant feeds the SSM (x, B, C) = SiLU(Conv1d(u)) ∘ u (eq. 9) instead of the "
             "convolution alone; the paper's figure 17 shows its accuracy and loss curves on inverse "
             "sequence matching across γ, as an alternative to the residual connection. The text gives no "
             "number: the claim checked here is that the gate, like the residual, lifts Mamba2 above the "
             "standard model's chance level."),
    plans={
        "quick": Plan(
            runs=(RunGroup("mamba2-gated", "mamba2-gated", "inverse", model={"pos_enc": True},
                           grid=cells(GATED_GAMMAS, [2]), seeds=3, train=INVERSE_QUICK),
                  RunGroup("mamba2", "mamba2", "inverse", grid=cells([0.5], [2]), seeds=3, train=INVERSE_QUICK)),
            departures=("γ ∈ {0.5, 1.0} instead of 0.5-1.0 in steps of 0.1; " + INVERSE_BUDGET_TEXT + ". The "
                        "gated model gets the residual model's positional encoding (the caption: 'consistent with "
                        "that of residual Mamba'). The standard mamba2 runs are shared with achilles-fig9."),
        ),
        "paper": Plan(runs=(RunGroup("mamba2-gated", "mamba2-gated", "inverse", model={"pos_enc": True},
                                     grid=cells([0.5, 0.6, 0.7, 0.8, 0.9, 1.0], [2]), seeds=3),
                            RunGroup("mamba2", "mamba2", "inverse", grid=cells([0.5], [2]), seeds=3)),
                      training_profile="paper", departures="none intended."),
    },
    claims=(
        Claim("gated-beats-standard",
              "The gated residual connection improves Mamba2 on inverse sequence matching",
              Source(PAPER, "Fig. 17 (curves; no number in the text)"),
              minus(rate("mamba2-gated", "acc", split="test"), rate("mamba2", "acc", split="test")),
              at_least(0.1), "gated (all γ pooled) minus standard mamba2 test accuracy"),
        Claim("gated-above-chance",
              "The gated Mamba2 generalises above chance",
              Source(PAPER, "Fig. 17 (curves; no number in the text)"),
              rate("mamba2-gated", "acc", split="test"), at_least(CHANCE_INVERSE + 0.1),
              "gated mamba2 test accuracy, all γ pooled (chance 0.2)"),
    ),
    figures=(
        Figure("test-curves", figures.curves(
            [("mamba2-gated", "mamba2-gated (all γ)"), ("mamba2", "mamba2")], "test", "acc",
            title="Test accuracy per epoch (figure 17)", chance=CHANCE_INVERSE),
            "Test accuracy per epoch, mean over runs; band = min..max."),
        Figure("by-gamma", figures.heatmaps("mamba2-gated", [("test", "acc", "test accuracy"),
                                                            ("train", "acc", "train accuracy")],
                                            title="mamba2-gated on inverse"),
               "Gated Mamba2 per γ."),
    ),
    paper_budget={**ACHILLES_TRAINING, "d_model": 128, "layers": 2, "γ": "0.5-1.0"},
)

# -- figure 12: convolution kernel similarity ---------------------------------------------------------
TWO_LAYER_G1 = cells([1.0], [2])


def _conv_cos(at: str):
    def measure(results: RecipeResults) -> Measurement:
        from achilles.recipes.measure import value_measurement

        values, missing = [], []
        for run in results.group("mamba2"):
            layers = (run.probes.get("conv-similarity") or {}).get("layers")
            key = f"{at}_mean_abs_off_diagonal"
            if not run.finished or not layers or any(key not in e for e in layers):
                missing.append(f"{run.label} ({run.status if not run.finished else 'no conv-similarity result'})")
                continue
            values.append(sum(e[key] for e in layers) / len(layers))
        return value_measurement(values, f"mean |cos| between conv taps at {at}, layers averaged", missing)

    return measure


conv_similarity = Recipe(
    name="conv-similarity",
    title="The convolution kernel's taps stay nearly orthogonal through training",
    paper=PAPER, source="Figure 12, E.1.5",
    summary=("The asymmetry comes from the convolution kernel: its taps (the weights applied to the current "
             "and the three previous tokens) are nearly orthogonal at initialization and still after "
             "training, so a sequence and its reverse are fused differently."),
    plans={
        "quick": Plan(runs=(RunGroup("mamba2", "mamba2", "composite", grid=TWO_LAYER_G1, seeds=3,
                                     train=COMPOSITE_QUICK),),
                      probes=(ProbeStep("conv-similarity", "mamba2"),),
                      departures=COMPOSITE_BUDGET_TEXT + "; the figure shows epoch 209. Shares its runs with "
                                 "achilles-fig4."),
        "paper": Plan(runs=(composite_paper("mamba2", "mamba2", TWO_LAYER_G1),),
                      probes=(ProbeStep("conv-similarity", "mamba2"),), training_profile="paper",
                      departures="200 epochs (the figure shows epoch 209)."),
    },
    claims=(
        Claim("taps-orthogonal-at-init", "The kernel taps are nearly orthogonal at the beginning of training",
              Source(PAPER, "Fig. 12, E.1.5", "nearly orthogonal"),
              _conv_cos("init"), at_most(0.2), "mean |cosine| between distinct taps at initialization"),
        Claim("taps-orthogonal-after", "... and at the end of training",
              Source(PAPER, "Fig. 12, E.1.5", "nearly orthogonal"),
              _conv_cos("final"), at_most(0.2), "mean |cosine| between distinct taps after training"),
    ),
    figures=(
        Figure("tap-similarity", figures.tap_similarity("mamba2", title="Convolution taps: cosine similarity"),
               "Figure 12: cosine similarity between the convolution kernel's taps (t = the current token), at "
               "initialization and after training, per layer."),
    ),
    paper_budget={**ACHILLES_TRAINING, "d_model": 32, "layers": 2, "γ": 1.0},
)

RECIPES = (fig4, fig6, fig7, fig8, fig9, fig13, gated, conv_similarity)
