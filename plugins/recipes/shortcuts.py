"""Recipes for Revealing and Mitigating the Local Pattern Shortcuts of Mamba (arXiv 2410.15678):
positional and n-gram shortcuts on multi-query associative recall, and global selection."""

from __future__ import annotations

from achilles.recipes import (Claim, Evaluation, Figure, Plan, Precondition, Recipe, RunGroup, Source, at_least,
                              at_most, minus, rate)

from . import figures
from ..papers import LOCAL_PATTERN_SHORTCUTS as SHORTCUTS

PAPER = SHORTCUTS

# MQAR at a CPU budget, from calibration: at the paper's smallest grid point (length 64, 4 pairs)
# Mamba2 (d_model 64) plateaus near 0.5 accuracy on the trained placement within 200,000-640,000
# samples (vocabulary 512 or 64), so no claim about the other placements could be judged; with 2
# pairs in 16 tokens it fits the trained placement in 3 epochs (~2 minutes a run).
MQAR_QUICK_TASK = {"vocab_size": 64, "length": 16, "n_pairs": 2}
MQAR_QUICK_MODEL = {"d_model": 64, "n_heads": 4}
#: a run takes about 2 minutes, and the placements' accuracies vary from seed to seed (last: 0.19-0.40 over 3 seeds),
#: so 5 seeds narrow the across-seed interval where 3 left every failure claim inconclusive
MQAR_QUICK_SEEDS = 5
MQAR_QUICK_TRAIN = {"epochs": 10, "lr_peak": 3e-3, "train_samples": 20_000, "eval_samples": 3_000,
                    "batch_size": 128}
MQAR_BUDGET_TEXT = ("a 64-token vocabulary instead of 8,192; 2-layer models of d_model 64 with 4 heads; 20,000 "
                    "training samples for 10 epochs at batch 128 and peak lr 3e-3 (one warm-up epoch, cosine to "
                    "1e-5); 3,000 test samples")
MQAR_PAPER_TASK = {"vocab_size": 8192, "length": 64, "n_pairs": 4}
PLACEMENT_SHARE = 1 / 3  # the test split mixes standard, last and shuffle in equal shares


def quick_mqar(arch: str, task_settings: dict, **extra) -> RunGroup:
    """A quick-profile MQAR run group named after its architecture (model, budget and seeds shared)."""
    return RunGroup(arch, arch, "mqar", model=MQAR_QUICK_MODEL, task_settings=task_settings, seeds=MQAR_QUICK_SEEDS,
                    train=MQAR_QUICK_TRAIN, **extra)


def fits_standard(group: str) -> Precondition:
    return Precondition(f"{group} solves the trained (standard) placement (acc_standard ≥ 0.9)",
                        rate(group, "acc_standard", share=PLACEMENT_SHARE), at_least(0.9))


shortcuts_position = Recipe(
    name="shortcuts-position",
    title="Positional shortcut: Mamba2 trained on contiguous key-value pairs fails when they move",
    paper=PAPER, source="§3.2 (positional shortcut), §4 (global selection)",
    summary=("Mamba2 is trained on MQAR with the key-value pairs at the start of the sequence (standard) and "
             "tested with them at the end of the first half (last) or scattered (shuffle). The paper's Mamba "
             "reaches 99.72% on standard but only 15.44% and 22.37% on last and shuffle: it learned where "
             "the pairs are, not how to recall them. Global selection (a long convolution gating dt) "
             "mitigates the shortcut."),
    plans={
        "quick": Plan(
            runs=(quick_mqar("mamba2", MQAR_QUICK_TASK), quick_mqar("mamba2-global", MQAR_QUICK_TASK)),
            departures=("2 key-value pairs in 16 tokens (the paper's grid runs from 4 pairs in 64 tokens to 128 in "
                        "512: at 4 pairs in 64 tokens Mamba2 did not fit the trained placement at this budget); "
                        + MQAR_BUDGET_TEXT + ", mixing the three placements equally. The paper trains "
                        "Mamba-130M-sized models."),
        ),
        "paper": Plan(
            runs=(RunGroup("mamba2", "mamba2", "mqar", model={"d_model": 128}, task_settings=MQAR_PAPER_TASK, seeds=3),
                  RunGroup("mamba2-global", "mamba2-global", "mqar", model={"d_model": 128},
                           task_settings=MQAR_PAPER_TASK, seeds=3)),
            training_profile="paper",
            departures="appendix D's schedule (the shortcuts paper's own training recipe is not in its summary)."),
    },
    claims=(
        Claim("mamba2-fits-standard", "Trained on standard MQAR, Mamba reaches near-perfect accuracy in domain",
              Source(PAPER, "§3.2", "99.72%"),
              rate("mamba2", "acc_standard", share=PLACEMENT_SHARE), at_least(0.9),
              "mamba2 test accuracy on the standard placement (value tokens)"),
        Claim("mamba2-fails-last", "... and fails when the pairs sit at the end of the context (last)",
              Source(PAPER, "§3.2", "15.44% (last)"),
              rate("mamba2", "acc_last", share=PLACEMENT_SHARE), at_most(0.5),
              "mamba2 test accuracy on the last placement",
              requires=(fits_standard("mamba2"),)),
        Claim("mamba2-fails-shuffle", "... or are scattered (shuffle)",
              Source(PAPER, "§3.2", "22.37% (shuffle)"),
              rate("mamba2", "acc_shuffle", share=PLACEMENT_SHARE), at_most(0.5),
              "mamba2 test accuracy on the shuffle placement",
              requires=(fits_standard("mamba2"),)),
        Claim("global-selection-recovers-shuffle", "Global selection mitigates the positional shortcut",
              Source(PAPER, "§4-5"),
              minus(rate("mamba2-global", "acc_shuffle", share=PLACEMENT_SHARE),
                    rate("mamba2", "acc_shuffle", share=PLACEMENT_SHARE)), at_least(0.1),
              "mamba2-global minus mamba2 test accuracy on the shuffle placement"),
    ),
    figures=(
        Figure("placements", figures.bars(
            [("mamba2", "mamba2"), ("mamba2-global", "mamba2-global")],
            [("test", "acc_standard", None, "standard (trained)"), ("test", "acc_last", None, "last"),
             ("test", "acc_shuffle", None, "shuffle")],
            title="MQAR trained on standard placement, tested on each placement"),
            "Test accuracy (value tokens) per placement; bars are means over seeds, dots single runs."),
    ),
    paper_budget={"paper's numbers": "standard 99.72 → last 15.44 / shuffle 22.37 (§3.2)",
                  "vocabulary": 8192, "grid": "(64, 4) … (512, 128)"},
)

# a K2V2 block with delimiters takes 7 tokens: 2 of them need a 16-token context, so 32 tokens in all
NGRAM_QUICK_TASK = {**MQAR_QUICK_TASK, "length": 32, "ngrams": "K1V1,K1V2", "test_ngrams": "K2V2",
                    "test_placements": "standard"}

shortcuts_ngram = Recipe(
    name="shortcuts-ngram",
    title="n-gram shortcut: Mamba2 trained on K1V1/K1V2 blocks fails on K2V2",
    paper=PAPER, source="§3.3 (n-gram shortcut)",
    summary=("Mamba2 is trained on MQAR whose key-value blocks hold one key token and one or two value tokens "
             "(K1V1, K1V2), then tested on blocks of two key and two value tokens (K2V2). The paper finds "
             "strong performance when the test n-grams do not exceed the trained ones and a sharp drop "
             "otherwise: Mamba recalls through frequent local templates."),
    plans={
        "quick": Plan(
            runs=(quick_mqar("mamba2", NGRAM_QUICK_TASK,
                             evals=(Evaluation("trained-ngrams", {"test_ngrams": "K1V1,K1V2"}, ("test",), 3_000),)),),
            departures=("2 key-value pairs in 32 tokens (a K2V2 block takes 7 tokens with its delimiters); "
                        + MQAR_BUDGET_TEXT + ". The trained n-grams are scored on held-out test samples of the "
                        "same format."),
        ),
        "paper": Plan(
            runs=(RunGroup("mamba2", "mamba2", "mqar", model={"d_model": 128},
                           task_settings={**NGRAM_QUICK_TASK, "vocab_size": 8192}, seeds=3,
                           evals=(Evaluation("trained-ngrams", {"test_ngrams": "K1V1,K1V2"}, ("test",)),)),),
            training_profile="paper", departures="appendix D's schedule."),
    },
    claims=(
        Claim("mamba2-fits-trained-ngrams", "Mamba performs strongly on the n-grams it was trained on",
              Source(PAPER, "§3.3"),
              rate("mamba2", "acc", eval="trained-ngrams"), at_least(0.9),
              "mamba2 accuracy on held-out K1V1/K1V2 samples"),
        Claim("mamba2-fails-k2v2", "... and deteriorates significantly on K2V2",
              Source(PAPER, "§3.3", "significant drop"),
              minus(rate("mamba2", "acc", eval="trained-ngrams"), rate("mamba2", "acc")), at_least(0.2),
              "accuracy on trained n-grams minus accuracy on K2V2 (test)",
              requires=(Precondition("mamba2 solves the trained n-grams (≥ 0.9)",
                                     rate("mamba2", "acc", eval="trained-ngrams"), at_least(0.9)),)),
    ),
    figures=(
        Figure("ngrams", figures.bars(
            [("mamba2", "mamba2")],
            [("test", "acc", "trained-ngrams", "K1V1/K1V2 (trained)"), ("test", "acc", None, "K2V2 (new)")],
            title="MQAR trained on K1V1 + K1V2, tested on K2V2"),
            "Test accuracy on the trained n-gram formats and on K2V2; bars are means over seeds."),
    ),
    paper_budget={"vocabulary": 8192, "train n-grams": "K1V1, K1V2", "test n-gram": "K2V2"},
)

RECIPES = (shortcuts_position, shortcuts_ngram)
