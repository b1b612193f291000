"""Recipes for Exploring the Limitations of Mamba in COPY and CoT Reasoning (arXiv 2410.03810):
copying strings of growing length, and dynamic programming with a chain of thought."""

from __future__ import annotations

from typing import Any, Mapping

from achilles.recipes import Claim, Figure, Plan, Recipe, RunGroup, Source, at_least, at_most, minus, per_run

from . import figures
from ..papers import COPY_AND_COT as COPY_COT

PAPER = COPY_COT

COPY_TASK = {"max_size": 20, "test_max_size": 30}
COPY_PAPER_TASK = {"max_size": 70, "test_max_size": 90}
#: calibration: at 40,000 strings x 10 epochs the Transformer (d_model 32) copies strings of up to ~15
#: symbols exactly (16-20: 0.14-0.40) while mamba2 d_model 32 copies 1-5 but none of 8+; 4 epochs of
#: 30,000 leave the Transformer at 0 beyond 8 symbols. mamba2 d_model 128 copies 16-20 symbols at
#: 0.9+ after 4 epochs of 30,000, so the width comparison trains every width at that shorter (and
#: cheaper: the wide model is ~3x slower) budget, side by side on the same data
COPY_TRAIN = {"epochs": 10, "lr_peak": 1e-3, "train_samples": 40_000, "eval_samples": 3_000, "batch_size": 256}
COPY_WIDE_TRAIN = {**COPY_TRAIN, "epochs": 4, "train_samples": 30_000}
SHORT, LONG, BEYOND = range(1, 6), range(16, 21), range(21, 26)  # trained short and long ends; never trained
COPY_SEEDS = 5
WIDTHS = (32, 64, 128)
CONTROL = "control (not a paper claim)"


def _final_test(run) -> dict:
    return (run.config.get("final_metrics") or {}).get("test") or {}


def sizes_rate(group: str, metric: str, sizes: range, total_sizes: int, *,
               where: Mapping[str, Any] | None = None) -> Any:
    """Per run, ``metric`` pooled over problem sizes ``sizes`` (``metric_n{size}``, equal shares of
    a split holding ``total_sizes`` sizes)."""

    def value(run):
        values = [_final_test(run).get(f"{metric}_n{s}") for s in sizes]
        if any(v is None for v in values):
            return None
        return sum(values) / len(values), int(run.eval_samples("test") * len(sizes) / total_sizes)

    cell = ", ".join(f"{k}={v}" for k, v in (where or {}).items())
    return per_run(group, value, f"{group} test {metric} for sizes {sizes.start}-{sizes.stop - 1}"
                   + (f" ({cell})" if cell else ""), where=where)


def by_size(metric: str):
    """``{size: value}`` of a run's final test ``metric_n{size}`` (for the length figure)."""

    def of(run) -> dict[int, float]:
        prefix = f"{metric}_n"
        return {int(k[len(prefix):]): v for k, v in _final_test(run).items()
                if k.startswith(prefix) and k[len(prefix):].isdigit()}

    return of


TEST_SIZES = COPY_TASK["test_max_size"]


def exact(group: str, sizes: range, where: Mapping[str, Any] | None = None) -> Any:
    """The group's exact-match of strings whose length is in ``sizes`` (test split)."""
    return sizes_rate(group, "exact", sizes, TEST_SIZES, where=where)


def longest_copied(width: int) -> Any:
    """Per run of the width group: the longest length L such that every string length 1..L is
    copied exactly at least 90% of the time (a capacity, in symbols)."""

    def value(run):
        table = by_size("exact")(run)
        if not table:
            return None
        longest = 0
        for n in sorted(table):
            if table[n] < 0.9:
                break
            longest = n
        return float(longest), None

    return per_run("mamba2-width", value, f"mamba2 d_model {width}: longest length copied exactly ≥ 90% "
                   "at every length up to it", where={"d_model": width}, is_rate=False)


copy_length = Recipe(
    name="copy-length",
    title="COPY: a constant-size Mamba2 loses long strings; the Transformer and a larger Mamba2 copy them",
    paper=PAPER, source="Figures 3-5, §3 (Theorems 1-3)",
    summary=("A random string, a separator, and the same string again: the model must copy. The paper shows "
             "that a constant-size Mamba struggles as the string grows while a Transformer copies easily, and "
             "that Mamba copies accurately only when its size grows with the length. Strings longer than any "
             "trained (21-25 symbols) test whether copying extends beyond training. Attention controls: "
             "`transformer` (learned absolute positions, as the paper's Transformer) on the trained lengths, "
             "`transformer-rope` (rotary, relative positions) beyond them, where learned absolute positions "
             "have no trained embedding."),
    plans={
        "quick": Plan(
            runs=(RunGroup("mamba2", "mamba2", "copy", task_settings=COPY_TASK, model={"d_model": 32},
                           seeds=COPY_SEEDS, train=COPY_TRAIN),
                  RunGroup("transformer", "transformer", "copy", task_settings=COPY_TASK, model={"d_model": 32},
                           seeds=COPY_SEEDS, train=COPY_TRAIN),
                  RunGroup("transformer-rope", "transformer-rope", "copy", task_settings=COPY_TASK,
                           model={"d_model": 32}, seeds=COPY_SEEDS, train=COPY_TRAIN),
                  RunGroup("mamba2-width", "mamba2", "copy", task_settings=COPY_TASK, grid={"d_model": list(WIDTHS)},
                           seeds=COPY_SEEDS, train=COPY_WIDE_TRAIN)),
            departures=("Strings of 1-20 symbols in training and 1-30 in test over 26 symbols; 2-layer models. "
                        "Mamba2 and both Transformers at d_model 32 on 40,000 training strings for 10 epochs (5 "
                        "seeds); the width comparison trains Mamba2 at d_model 32, 64 and 128 on 30,000 strings for "
                        "4 epochs (5 seeds each, every width on the same data), at peak lr 1e-3 (batch 256). The "
                        "paper's lengths reach 70 and its models d = 256. Accuracies are teacher-forced (each "
                        "copied symbol predicted from the true prefix)."),
        ),
        "paper": Plan(
            runs=(RunGroup("mamba2", "mamba2", "copy", task_settings=COPY_PAPER_TASK, model={"d_model": 64}, seeds=3),
                  RunGroup("transformer", "transformer", "copy", task_settings=COPY_PAPER_TASK,
                           model={"d_model": 64}, seeds=3),
                  RunGroup("transformer-rope", "transformer-rope", "copy", task_settings=COPY_PAPER_TASK,
                           model={"d_model": 64}, seeds=3),
                  RunGroup("mamba2-width", "mamba2", "copy", task_settings=COPY_PAPER_TASK,
                           grid={"d_model": [64, 128, 256]}, seeds=3)),
            training_profile="paper", departures="appendix D of Achilles' Heel for the schedule (the COPY paper's "
                                                 "training details are not in its summary)."),
    },
    claims=(
        Claim("transformer-copies-better",
              "A Transformer copies long strings more accurately than a Mamba of the same width",
              Source(PAPER, "Figs. 4-5, Theorems 1-2", "Transformer ≈100% where Mamba drops"),
              minus(exact("transformer", LONG), exact("mamba2", LONG)),
              at_least(0.1, "a minimum effect of 0.1 exact-match"),
              "exact-match of strings of 16-20 symbols: transformer minus mamba2 (d_model 32), same data, paired "
              "by seed"),
        Claim("mamba-degrades-with-length",
              "A constant-size Mamba's copy accuracy falls as the string grows",
              Source(PAPER, "Fig. 3 (right), Theorem 1", "accuracy falls with length"),
              minus(exact("mamba2", SHORT), exact("mamba2", LONG)),
              at_least(0.3, "a minimum effect of 0.3 exact-match between short and long strings"),
              "mamba2 (d_model 32) exact-match of strings of 1-5 minus 16-20 symbols, paired within each run"),
        Claim("larger-mamba-copies-longer",
              "A larger Mamba copies long strings better",
              Source(PAPER, "Figs. 3 (left), 5, Theorem 3", "larger models copy longer strings"),
              minus(exact("mamba2-width", LONG, {"d_model": 128}), exact("mamba2-width", LONG, {"d_model": 32})),
              at_least(0.1, "a minimum effect of 0.1 exact-match"),
              "exact-match of strings of 16-20 symbols: mamba2 d_model 128 minus 32, same data and budget, "
              "paired by seed"),
        Claim("capacity-grows-with-size",
              "The length Mamba can copy grows with its size",
              Source(PAPER, "Theorem 3", "size must grow linearly with the length"),
              minus(longest_copied(128), longest_copied(32)),
              at_least(4.0, "4x the width must copy strings at least 4 symbols longer; three widths cannot "
                            "show linearity, only growth"),
              "longest length copied exactly (≥ 90% at every length up to it): d_model 128 minus 32, paired by seed"),
        Claim("rope-copies-beyond-training",
              "Beyond the trained lengths, attention with relative positions copies better than Mamba",
              Source(PAPER, "Figs. 4-5", "Transformers copy long strings"),
              minus(exact("transformer-rope", BEYOND), exact("mamba2", BEYOND)),
              at_least(0.1, "a minimum effect of 0.1 exact-match"),
              "exact-match of strings of 21-25 symbols (never trained): transformer-rope minus mamba2 (d_model "
              "32), same data, paired by seed"),
        Claim("absolute-positions-stop-at-training",
              "(control) Learned absolute positions copy nothing beyond the trained lengths",
              Source(PAPER, CONTROL),
              exact("transformer", BEYOND), at_most(0.05, "nothing: at most 0.05 exact-match"),
              "transformer (learned absolute positions) exact-match of strings of 21-25 symbols"),
    ),
    figures=(
        Figure("exact-by-length", figures.lines_by(
            [("transformer", "transformer (absolute)"), ("transformer-rope", "transformer (rotary)"),
             ("mamba2", "mamba2 (same width)")], int, by_size("exact"),
            xlabel="string length n",
            title="COPY: exact match by length (mean over seeds)", ylabel="exact match"),
            "Exact-match by string length (lengths above 20 were never trained)."),
        Figure("mamba-by-length", figures.lines_by(
            [("mamba2-width", "mamba2 (d 32, 64, 128 pooled)")], int, by_size("exact"),
            xlabel="string length n", title="COPY: mamba2 exact match by length", ylabel="exact match"),
            "Mamba2 exact-match by string length, the width group (30,000 strings x 4 epochs)."),
    ),
    paper_budget={"lengths": "up to 70", "width": "d = 256 in figure 4"},
)

# -- chain-of-thought DP ----------------------------------------------------------------------------------
#: calibration (d_model 32, 40,000 problems x 8 epochs, LIS up to 24 numbers): the answer after a
#: teacher-forced chain of thought is easy (0.95-0.99 for both models: it is the max of the given dp
#: values), so the claims read the chain-of-thought tokens themselves (cot_acc: the DP values)
LIS_TASK = {"max_size": 24, "test_max_size": 24}
ED_TASK = {"max_size": 6, "test_max_size": 6}
COT_TRAIN = {"epochs": 8, "lr_peak": 1e-3, "train_samples": 20_000, "eval_samples": 3_000, "batch_size": 256}
COT_MODEL = {"d_model": 32}


def _gap(task: str) -> Any:
    return minus(_rate(f"transformer-{task}"), _rate(f"mamba2-{task}"))


def _rate(group: str) -> Any:
    from achilles.recipes import rate

    return rate(group, "cot_acc")


cot_dp = Recipe(
    name="cot-dp",
    title="Chain-of-thought DP: Mamba2 trails the Transformer, less so when the DP is local",
    paper=PAPER, source="§4 (Theorems 4-5), experiments on CoT tasks",
    summary=("Both models write the DP table of a problem as a chain of thought, then the answer. The longest "
             "increasing subsequence (cot-lis) has no locality: each dp[i] reads every earlier entry. Edit "
             "distance (cot-ed) is m-local: each cell reads its neighbours. The paper proves Mamba needs "
             "Transformer-like cost for arbitrary DP but can save on local DP, and finds experimentally that "
             "Mamba trails the Transformer on these tasks."),
    plans={
        "quick": Plan(
            runs=tuple(RunGroup(f"{arch}-{short}", arch, task, model=COT_MODEL, task_settings=settings, seeds=5,
                                train=COT_TRAIN)
                       for arch in ("mamba2", "transformer")
                       for short, task, settings in (("lis", "cot-lis", LIS_TASK), ("ed", "cot-ed", ED_TASK))),
            departures=("LIS of up to 24 numbers and edit distance of strings of up to 6 letters (train and test on "
                        "the same sizes); 2-layer models of d_model 32; 20,000 training problems for 8 epochs at "
                        "peak lr 1e-3 (batch 256); 5 seeds, seed s of both models on the same problems. The claims read the teacher-forced chain-of-thought tokens "
                        "(the DP values), not the final answer, which is easy once the true chain is given."),
        ),
        "paper": Plan(
            runs=tuple(RunGroup(f"{arch}-{short}", arch, task, model={"d_model": 128}, seeds=3)
                       for arch in ("mamba2", "transformer") for short, task in (("lis", "cot-lis"), ("ed", "cot-ed"))),
            training_profile="paper", departures="appendix D of Achilles' Heel for the schedule."),
    },
    claims=(
        Claim("mamba-trails-on-lis",
              "Mamba trails the Transformer by at least 5 points on a non-local DP with chain of thought (LIS)",
              Source(PAPER, "§4 experiments", "Mamba trails the Transformer (no number)"),
              _gap("lis"), at_least(0.05, "the statement's minimum effect: 5 points of DP-token accuracy"),
              "chain-of-thought (DP value) token accuracy on cot-lis: transformer minus mamba2, same data, paired "
              "by seed"),
        Claim("locality-narrows-gap",
              "Locality helps Mamba: its gap to the Transformer is at least 3 points smaller on edit distance",
              Source(PAPER, "Theorem 5 (m-locality)", "savings on m-local DP (no number)"),
              minus(_gap("lis"), _gap("ed")), at_least(0.03, "the statement's minimum effect: 3 points"),
              "(transformer − mamba2) chain-of-thought token accuracy on cot-lis minus the same on cot-ed "
              "(different tasks: Welch t over the per-seed gaps)"),
    ),
    figures=(
        Figure("answer-accuracy", figures.bars(
            [("mamba2-lis", "mamba2\nLIS"), ("transformer-lis", "transformer\nLIS"),
             ("mamba2-ed", "mamba2\nedit distance"), ("transformer-ed", "transformer\nedit distance")],
            [("test", "cot_acc", None, "chain-of-thought (DP value) tokens"), ("test", "answer_acc", None, "answer"),
             ("test", "exact", None, "whole chain and answer")],
            title="DP with chain of thought"),
            "Test answer accuracy and chain-of-thought token accuracy; means over seeds, dots single runs."),
    ),
    paper_budget={"tasks": "DP problems with CoT (LIS, edit distance among them)"},
)

RECIPES = (copy_length, cot_dp)
