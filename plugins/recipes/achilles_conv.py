"""Achilles' Heel recipes on the convolution before the mixer, on the composite function task: figure 8
(a Transformer given Mamba's convolution: which solution it learns) and figure 12 (the convolution
kernel's taps stay nearly orthogonal). Thresholds: ``achilles_common``."""

from __future__ import annotations

from achilles.recipes import (Claim, Figure, Plan, ProbeStep, Recipe, RunGroup, Source, at_least, at_most, minus,
                              per_run)

from . import figures
from .achilles_common import (BIG_EFFECT, COMPOSITE_BUDGET_TEXT, COMPOSITE_QUICK, FIG4_SEEDS, LEARNED_RULE,
                              NOT_LEARNED_RULE, PAPER, TRAINING, cells, composite_minus_symmetric, composite_paper,
                              composite_phase_diagram, neither_solution, pair43)

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
                           seeds=5, train=COMPOSITE_QUICK),),
            departures=("γ ∈ {0.5, 1.0} at depth 2 instead of γ 0.5-1.0 × depth 2-6; "
                        + COMPOSITE_BUDGET_TEXT + "; 5 seeds per cell.")),
        "paper": Plan(runs=(composite_paper("conv-transformer", "conv-transformer",
                                            cells([0.5, 0.6, 0.7, 0.8, 0.9, 1.0], [2, 3, 4, 5, 6])),),
                      training_profile="paper", departures="none intended."),
    },
    claims=(
        Claim("symmetric-at-large-gamma",
              "For relatively large γ the conv-Transformer fits the data by the symmetric solution (§4.3, first reading)",
              Source(PAPER, "§4.3, Fig. 8", "symmetric solution at large γ (no number)"),
              pair43("conv-transformer", "symmetric", 1.0), LEARNED_RULE,
              "test symmetric accuracy of 43 at γ = 1.0, runs that fit the seen pairs",
              decides="more seeds: runs at this budget split between the solutions"),
        Claim("composite-like-mamba",
              "The conv-Transformer prefers the composite solution, as Mamba does (§4.3, second reading)",
              Source(PAPER, "§4.3, Fig. 8", "'similar preference for composite function solutions as Mamba'"),
              composite_minus_symmetric("conv-transformer", 1.0),
              at_least(BIG_EFFECT, "a minimum effect of 0.3, between 'learned' and 'not learned'"),
              "composite minus symmetric test accuracy of 43 at γ = 1.0, paired within each run",
              decides="more seeds: runs at this budget split between the solutions"),
        Claim("no-generalisation-at-small-gamma",
              "For small γ the conv-Transformer does not generalise to 43",
              Source(PAPER, "§4.3, Fig. 8", "'can not generalize for small γ'"),
              neither_solution("conv-transformer", 0.5), NOT_LEARNED_RULE,
              "the larger of 43's composite and symmetric test accuracies at γ = 0.5, per run",
              decides="more seeds: runs at this budget split between the solutions"),
    ),
    figures=(
        composite_phase_diagram("conv-transformer", "Figure 8: per γ (x) and depth (y), mean over seeds."),
    ),
    paper_budget={**TRAINING, "d_model": 32, "grid": "γ 0.5-1.0 × depth 2-6", "seeds": 3},
    subject="conv-transformer",
    fixed_subject="figure 8 studies the conv-Transformer itself (a Transformer given Mamba's convolution)",
)

# -- figure 12: convolution kernel similarity ---------------------------------------------------------
TWO_LAYER_G1 = cells([1.0], [2])


def _tap_cos(at: str):
    """Per run, the mean |cos| between distinct convolution taps at ``at`` (init or final), layers averaged."""

    def value(run) -> tuple[float, None] | None:
        layers = (run.probes.get("conv-similarity") or {}).get("layers")
        key = f"{at}_mean_abs_off_diagonal"
        if not layers or any(key not in e for e in layers):
            return None
        return sum(e[key] for e in layers) / len(layers), None

    return per_run("mamba2", value, f"mean |cos| between conv taps at {at}, layers averaged", is_rate=False)


conv_similarity = Recipe(
    name="conv-similarity",
    title="The convolution kernel's taps stay nearly orthogonal through training",
    paper=PAPER, source="Figure 12, E.1.5",
    summary=("The asymmetry comes from the convolution kernel: its taps (the weights applied to the current "
             "and the three previous tokens) are nearly orthogonal at initialization and still after "
             "training, so a sequence and its reverse are fused differently. The initial taps are each run's "
             "own control for the trained ones."),
    plans={
        "quick": Plan(runs=(RunGroup("mamba2", "mamba2", "composite", grid=TWO_LAYER_G1, seeds=FIG4_SEEDS,
                                     train=COMPOSITE_QUICK),),
                      probes=(ProbeStep("conv-similarity", "mamba2"),),
                      departures=COMPOSITE_BUDGET_TEXT + f"; the figure shows epoch 209. Shares its {FIG4_SEEDS} "
                                 "runs with achilles-fig4 (its γ = 1, 2-layer cell)."),
        "paper": Plan(runs=(composite_paper("mamba2", "mamba2", TWO_LAYER_G1),),
                      probes=(ProbeStep("conv-similarity", "mamba2"),), training_profile="paper",
                      departures="200 epochs (the figure shows epoch 209)."),
    },
    claims=(
        Claim("taps-orthogonal-at-init", "The kernel taps are nearly orthogonal at the beginning of training",
              Source(PAPER, "Fig. 12, E.1.5", "nearly orthogonal"),
              _tap_cos("init"), at_most(0.2, "'nearly orthogonal': mean |cos| ≤ 0.2"),
              "mean |cosine| between distinct taps at initialization, per run"),
        Claim("taps-stay-orthogonal", "... and stay so through training",
              Source(PAPER, "Fig. 12, E.1.5", "nearly orthogonal at epoch 209"),
              minus(_tap_cos("final"), _tap_cos("init")),
              at_most(0.1, "'still nearly orthogonal': the mean |cos| grows by at most 0.1 over its own "
                           "initial value (the control)"),
              "mean |cosine| between distinct taps after training minus at initialization, paired within each run"),
    ),
    figures=(
        Figure("tap-similarity", figures.tap_similarity("mamba2", title="Convolution taps: cosine similarity"),
               "Figure 12: cosine similarity between the convolution kernel's taps (t = the current token), at "
               "initialization and after training, per layer."),
    ),
    paper_budget={**TRAINING, "d_model": 32, "layers": 2, "γ": 1.0},
    fixed_subject="figure 12 reads the taps of Mamba2's depthwise convolution kernel",
)

RECIPES = (fig8, conv_similarity)
