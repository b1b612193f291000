"""Recipes for Exploring the Limitations of Mamba in COPY and CoT Reasoning (arXiv 2410.03810):
copying strings of growing length, and dynamic programming with a chain of thought."""

from __future__ import annotations

from typing import Any, Mapping

from achilles.recipes import (Claim, Figure, Measurement, Plan, Recipe, RecipeResults, RunGroup, Source, at_least,
                              minus)
from achilles.recipes.measure import rate_measurement

from . import figures
from ..papers import COPY_AND_COT as COPY_COT

PAPER = COPY_COT

COPY_TASK = {"max_size": 20, "test_max_size": 30}
COPY_PAPER_TASK = {"max_size": 70, "test_max_size": 70}
#: calibration: at 40,000 strings x 10 epochs the Transformer (d_model 32) copies strings of up to ~15
#: symbols exactly (16-20: 0.14-0.40) while mamba2 d_model 32 copies 1-5 but none of 8+; 4 epochs of
#: 30,000 leave the Transformer at 0 beyond 8 symbols. mamba2 d_model 128 copies 16-20 symbols at
#: 0.9+ after 4 epochs of 30,000, so the wide model gets that shorter (and cheaper: it is ~3x slower) budget
COPY_TRAIN = {"epochs": 10, "lr_peak": 1e-3, "train_samples": 40_000, "eval_samples": 3_000, "batch_size": 256}
COPY_WIDE_TRAIN = {**COPY_TRAIN, "epochs": 4, "train_samples": 30_000}
SHORT, LONG = range(1, 6), range(16, 21)  # trained lengths: short and long ends


def sizes_rate(group: str, metric: str, sizes: range, total_sizes: int, *,
               where: Mapping[str, Any] | None = None) -> Any:
    """``metric`` pooled over problem sizes ``sizes`` (``metric_n{size}``, equal shares of a split
    holding ``total_sizes`` sizes)."""

    def measure(results: RecipeResults) -> Measurement:
        rates, counts, missing = [], [], []
        for run in results.group(group, where):
            final = (run.config.get("final_metrics") or {}).get("test") or {}
            values = [final.get(f"{metric}_n{s}") for s in sizes]
            if not run.finished or any(v is None for v in values):
                missing.append(f"{run.label} ({run.status if not run.finished else 'missing sizes'})")
                continue
            rates.append(sum(values) / len(values))
            counts.append(int(run.eval_samples("test") * len(sizes) / total_sizes))
        cell = ", ".join(f"{k}={v}" for k, v in (where or {}).items())
        return rate_measurement(rates, counts, f"{group} test {metric} for sizes {sizes.start}-{sizes.stop - 1}"
                                + (f" ({cell})" if cell else ""), missing)

    return measure


def by_size(metric: str):
    """``{size: value}`` of a run's final test ``metric_n{size}`` (for the length figure)."""

    def of(run) -> dict[int, float]:
        final = (run.config.get("final_metrics") or {}).get("test") or {}
        prefix = f"{metric}_n"
        return {int(k[len(prefix):]): v for k, v in final.items() if k.startswith(prefix) and k[len(prefix):].isdigit()}

    return of


TEST_SIZES = COPY_TASK["test_max_size"]


def exact(group: str, sizes: range) -> Any:
    """The group's exact-match of strings whose length is in ``sizes`` (test split)."""
    return sizes_rate(group, "exact", sizes, TEST_SIZES)

copy_length = Recipe(
    name="copy-length",
    title="COPY: a constant-size Mamba2 loses long strings; the Transformer and a larger Mamba2 copy them",
    paper=PAPER, source="Figures 3-5, §3 (Theorems 1-3)",
    summary=("A random string, a separator, and the same string again: the model must copy. The paper shows "
             "that a constant-size Mamba struggles as the string grows while a Transformer copies easily, and "
             "that Mamba copies accurately only when its size grows with the length."),
    plans={
        "quick": Plan(
            runs=(RunGroup("mamba2", "mamba2", "copy", task_settings=COPY_TASK, model={"d_model": 32}, seeds=3,
                           train=COPY_TRAIN),
                  RunGroup("mamba2-wide", "mamba2", "copy", task_settings=COPY_TASK, grid={"d_model": [128]},
                           seeds=3, train=COPY_WIDE_TRAIN),
                  RunGroup("transformer", "transformer", "copy", task_settings=COPY_TASK, model={"d_model": 32},
                           seeds=3, train=COPY_TRAIN)),
            departures=("Strings of 1-20 symbols in training and 1-30 in test over 26 symbols; 2-layer models of "
                        "d_model 32 (Mamba2 and Transformer: 40,000 training strings for 10 epochs) and 128 "
                        "(Mamba2: 30,000 strings for 4 epochs, less training than the narrow models get), at "
                        "peak lr 1e-3 (batch 256). The paper's lengths reach 70 and its models d = 256. "
                        "Accuracies are teacher-forced (each copied symbol predicted from the true prefix)."),
        ),
        "paper": Plan(
            runs=(RunGroup("mamba2", "mamba2", "copy", task_settings=COPY_PAPER_TASK, model={"d_model": 64}, seeds=3),
                  RunGroup("mamba2-wide", "mamba2", "copy", task_settings=COPY_PAPER_TASK,
                           grid={"d_model": [128, 256]}, seeds=3),
                  RunGroup("transformer", "transformer", "copy", task_settings=COPY_PAPER_TASK,
                           model={"d_model": 64}, seeds=3)),
            training_profile="paper", departures="appendix D of Achilles' Heel for the schedule (the COPY paper's "
                                                 "training details are not in its summary)."),
    },
    claims=(
        Claim("transformer-copies-better",
              "A Transformer copies long strings more accurately than a Mamba of the same width",
              Source(PAPER, "Figs. 4-5, Theorems 1-2"),
              minus(exact("transformer", LONG), exact("mamba2", LONG)), at_least(0.1),
              "exact-match of strings of 16-20 symbols: transformer minus mamba2 of the same width"),
        Claim("mamba-degrades-with-length",
              "A constant-size Mamba's copy accuracy falls as the string grows",
              Source(PAPER, "Fig. 3 (right), Theorem 1"),
              minus(exact("mamba2", SHORT), exact("mamba2", LONG)), at_least(0.1),
              "mamba2 (the narrow one) exact-match of strings of 1-5 minus 16-20 symbols"),
        Claim("larger-mamba-copies-longer",
              "A larger Mamba copies long strings better (size must grow with length)",
              Source(PAPER, "Figs. 3 (left), 5, Theorem 3"),
              minus(exact("mamba2-wide", LONG), exact("mamba2", LONG)), at_least(0.1),
              "exact-match of strings of 16-20 symbols: the wide mamba2 minus the narrow one"),
    ),
    figures=(
        Figure("exact-by-length", figures.lines_by(
            [("transformer", "transformer"), ("mamba2", "mamba2 (same width)")], int, by_size("exact"),
            xlabel="string length n",
            title="COPY: exact match by length (mean over seeds)", ylabel="exact match"),
            "Exact-match by string length (lengths above 20 were never trained)."),
        Figure("mamba-by-length", figures.lines_by(
            [("mamba2", "mamba2 (d 32)"), ("mamba2-wide", "mamba2 (d 128)")], int, by_size("exact"),
            xlabel="string length n", title="COPY: mamba2 exact match by length", ylabel="exact match"),
            "Mamba2 exact-match by string length, at two widths."),
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
            runs=tuple(RunGroup(f"{arch}-{short}", arch, task, model=COT_MODEL, task_settings=settings, seeds=3,
                                train=COT_TRAIN)
                       for arch in ("mamba2", "transformer")
                       for short, task, settings in (("lis", "cot-lis", LIS_TASK), ("ed", "cot-ed", ED_TASK))),
            departures=("LIS of up to 24 numbers and edit distance of strings of up to 6 letters (train and test on "
                        "the same sizes); 2-layer models of d_model 32; 20,000 training problems for 8 epochs at "
                        "peak lr 1e-3 (batch 256). The claims read the teacher-forced chain-of-thought tokens "
                        "(the DP values), not the final answer, which is easy once the true chain is given."),
        ),
        "paper": Plan(
            runs=tuple(RunGroup(f"{arch}-{short}", arch, task, model={"d_model": 128}, seeds=3)
                       for arch in ("mamba2", "transformer") for short, task in (("lis", "cot-lis"), ("ed", "cot-ed"))),
            training_profile="paper", departures="appendix D of Achilles' Heel for the schedule."),
    },
    claims=(
        Claim("mamba-trails-on-lis", "Mamba trails the Transformer on a non-local DP with chain of thought (LIS)",
              Source(PAPER, "§4 experiments"),
              _gap("lis"), at_least(0.05), "chain-of-thought (DP value) token accuracy on cot-lis: "
              "transformer minus mamba2"),
        Claim("locality-narrows-gap", "Locality helps Mamba: its gap to the Transformer is smaller on edit distance",
              Source(PAPER, "Theorem 5 (m-locality)"),
              minus(_gap("lis"), _gap("ed")), at_least(0.0),
              "(transformer − mamba2) chain-of-thought token accuracy on cot-lis minus the same on cot-ed"),
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
