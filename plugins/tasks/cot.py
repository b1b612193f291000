"""Dynamic programming with a chain of thought: longest increasing subsequence and edit
distance (Exploring the Limitations of Mamba in COPY and CoT Reasoning)."""

from __future__ import annotations

import string
from dataclasses import replace
from typing import ClassVar

import numpy as np
import torch

from achilles import Batch, check_int

from ._common import masked_hits, next_token_targets
from ..papers import COPY_AND_COT
from ._sequence import SizedSequenceTask


class _ChainOfThoughtTask(SizedSequenceTask):
    """Shared scoring: the scored positions are the chain of thought (DP values and the
    structure tokens between them) and the answer, which is the token after ``ANS``."""

    paper = replace(COPY_AND_COT, section="CoT for dynamic programming (Theorems 4-5) and its experiments")
    headline_metric = "answer_acc"
    ANS: ClassVar[int] = 0
    #: first token id that spells a number; ids below it are special tokens or symbols
    number_base: ClassVar[int] = 0

    def metrics(self, logits: torch.Tensor, batch: Batch) -> dict[str, float]:
        correct, row = masked_hits(logits, batch)
        scored_tokens, scored_targets = batch.tokens[batch.mask], batch.targets[batch.mask]
        is_answer = scored_tokens == self.ANS  # the position after ANS predicts the answer
        is_value = ~is_answer & (scored_targets >= self.number_base)
        size, n = batch.meta["size"], len(batch)
        out: dict[str, float] = {}
        answer = torch.zeros(n, dtype=torch.bool)
        answer[row[is_answer]] = correct[is_answer]
        self._by_size(out, "answer_acc", answer, size)
        self._by_size(out, "cot_acc", correct[is_value], size[row[is_value]])
        self._by_size(out, "cot_exact", self._row_all(correct[~is_answer], row[~is_answer], n), size, per_size=False)
        self._by_size(out, "exact", self._row_all(correct, row, n), size, per_size=False)
        return out


class LISTask(_ChainOfThoughtTask):
    """Longest increasing subsequence with a chain of thought (docs/tasks.md `cot-lis`).

    Input: n numbers; then the chain of thought dp[1..n], dp[i] = the length of the longest
    strictly increasing subsequence ending at i (each depends on all earlier entries: no
    locality); then the answer max(dp). Layout: ``x1..xn <sep> dp1..dpn <ans> answer``
    (length 2n + 3).

    Choices where the paper is silent:

    - Numbers are uniform over [0, ``value_range``) (default 100), independent; "increasing"
      is strict. Numbers and DP values share one set of number tokens.
    - Tokens: 0 pad, 1 ``<sep>``, 2 ``<ans>``, then number v as 3 + v for
      v < max(value_range, test_max_size + 1).
    - Sizes: train n over [``min_size``, ``max_size``] = [1, 16], test over [1,
      ``test_max_size`` = 24]; equal share per n; rows padded to 51.
    - Scored (teacher-forced, next token): dp1..dpn, the ``<ans>`` marker and the answer.
    - Metrics: ``answer_acc`` and ``cot_acc`` (DP-value tokens), each per size (``_n12``) and
      trained vs longer sizes; ``cot_exact`` (whole chain right) and ``exact`` (chain and
      answer right: equal to greedy-decoding exact match).
    - Train and test never share a problem (hash of the tokens). Sizes: train 100,000, test 10,000.
    """

    PAD, SEP, ANS = 0, 1, 2
    number_base = 3

    def __init__(self, value_range: int = 100, min_size: int = 1, max_size: int = 16,
                 test_max_size: int = 24) -> None:
        value_range = check_int("value_range", value_range, minimum=2)
        min_size, max_size, test_max_size = self._check_sizes(min_size, max_size, test_max_size)
        super().__init__(value_range=value_range, min_size=min_size, max_size=max_size,
                         test_max_size=test_max_size)

    @property
    def vocab_size(self) -> int:
        return self.number_base + max(self.config["value_range"], self.config["test_max_size"] + 1)

    def _length(self, size: int) -> int:
        return 2 * size + 3

    @staticmethod
    def lis_table(x: np.ndarray) -> np.ndarray:
        """dp (N, T) for every prefix of each row: one vectorised step per column."""
        dp = np.ones(x.shape, dtype=np.int64)
        for i in range(1, x.shape[1]):
            earlier = np.where(x[:, :i] < x[:, i:i + 1], dp[:, :i], 0)
            dp[:, i] = 1 + earlier.max(axis=1)
        return dp

    def _layout(self, rng: np.random.Generator, sizes: np.ndarray) -> dict[str, np.ndarray]:
        top, base = self.config["test_max_size"], self.number_base
        x = rng.integers(0, self.config["value_range"], (len(sizes), top))
        dp = self.lis_table(x)  # entries past a row's n are never shown
        cols = np.arange(self.seq_len)[None, :]
        n = sizes[:, None]
        answer = np.where(np.arange(top)[None, :] < n, dp, 0).max(axis=1, keepdims=True)
        x_at = np.take_along_axis(x, np.clip(cols, 0, top - 1), axis=1)
        dp_at = np.take_along_axis(dp, np.clip(cols - n - 1, 0, top - 1), axis=1)
        tokens = np.select([cols < n, cols == n, cols <= 2 * n, cols == 2 * n + 1, cols == 2 * n + 2],
                           [x_at + base, self.SEP, dp_at + base, self.ANS, answer + base], self.PAD)
        mask = (cols >= n) & (cols <= 2 * n + 1)
        return {"tokens": tokens, "targets": next_token_targets(tokens, mask, self.PAD), "mask": mask}

    def token_str(self, token: int) -> str:
        token = int(token)
        return ("_", "<sep>", "<ans>")[token] if token < self.number_base else str(token - self.number_base)


class EditDistanceTask(_ChainOfThoughtTask):
    """Edit distance with a chain of thought (docs/tasks.md `cot-ed`).

    Input: strings a (length n) and b (length m); then the DP table written row by row,
    D[i][1..m] for i = 1..n (D[i][j] = the edit distance of a[:i] and b[:j]; each cell depends
    on its three neighbours, so a cell's inputs lie at most m+2 tokens back: m-locality), then
    the answer D[n][m]. Layout: ``a <sep> b <sep> D[1][1..m] <nl> ... D[n][1..m] <ans> answer``
    (length n + m + 3 + n·(m+1)).

    Choices where the paper is silent:

    - Levenshtein distance with unit costs for insertion, deletion and substitution.
    - The table omits row 0 and column 0 (D[0][j] = j, D[i][0] = i: known without thinking).
    - Alphabet of ``alphabet_size`` letters (default 8, so that matches are common and the table
      is not trivial), uniform and independent.
    - Problem size = max(n, m): the size is drawn with an equal share per size, the other string's
      length uniform in [``min_size``, size], and which string is the longer one is a fair coin.
      Train sizes [1, ``max_size`` = 8], test [1, ``test_max_size`` = 12]; rows padded to 183.
    - Tokens: 0 pad, 1 ``<sep>``, 2 ``<nl>``, 3 ``<ans>``, letters from 4, then numbers
      0..test_max_size.
    - Scored (teacher-forced, next token): every table cell, the ``<nl>``/``<ans>`` markers and
      the answer. Metrics as for ``cot-lis`` (``answer_acc``, ``cot_acc``, per size,
      ``cot_exact``, ``exact``).
    - Train and test never share a problem (hash of the tokens). Sizes: train 100,000, test 10,000.
    """

    PAD, SEP, NL, ANS = 0, 1, 2, 3
    N_SPECIAL = 4

    def __init__(self, alphabet_size: int = 8, min_size: int = 1, max_size: int = 8,
                 test_max_size: int = 12) -> None:
        alphabet_size = check_int("alphabet_size", alphabet_size, minimum=2)
        min_size, max_size, test_max_size = self._check_sizes(min_size, max_size, test_max_size)
        super().__init__(alphabet_size=alphabet_size, min_size=min_size, max_size=max_size,
                         test_max_size=test_max_size)
        self.number_base = self.N_SPECIAL + alphabet_size  # instance attribute: depends on the alphabet

    @property
    def vocab_size(self) -> int:
        return self.number_base + self.config["test_max_size"] + 1

    def _length(self, size: int) -> int:
        return 2 * size + 3 + size * (size + 1)

    @staticmethod
    def distance_table(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """D (N, T+1, U+1) for every pair of prefixes; each row is one vectorised step:
        D[i][j] = min over k <= j of (E[k] + j - k), E being the best of diagonal and above."""
        rows, t, u = a.shape[0], a.shape[1], b.shape[1]
        j = np.arange(u + 1)
        table = np.empty((rows, t + 1, u + 1), dtype=np.int64)
        table[:, 0, :] = j
        for i in range(1, t + 1):
            prev = table[:, i - 1, :]
            best = np.minimum(prev[:, :-1] + (a[:, i - 1:i] != b), prev[:, 1:] + 1)  # substitute / delete
            start = np.concatenate([np.full((rows, 1), i), best], axis=1)  # D[i][0] = i
            table[:, i, :] = np.minimum.accumulate(start - j, axis=1) + j  # insertions along the row
        return table

    def _layout(self, rng: np.random.Generator, sizes: np.ndarray) -> dict[str, np.ndarray]:
        rows, top = len(sizes), self.config["test_max_size"]
        other = rng.integers(self.config["min_size"], sizes + 1)
        a_longer = rng.integers(0, 2, rows).astype(bool)
        n = np.where(a_longer, sizes, other)[:, None]
        m = np.where(a_longer, other, sizes)[:, None]
        alphabet = self.config["alphabet_size"]
        a = rng.integers(0, alphabet, (rows, top))
        b = rng.integers(0, alphabet, (rows, top))
        table = self.distance_table(a, b)

        cols = np.arange(self.seq_len)[None, :]
        start = n + m + 2  # first table cell
        rel = cols - start
        i = np.clip(rel // (m + 1) + 1, 0, top)
        j = rel % (m + 1) + 1  # j == m + 1: the row's end marker
        r = np.arange(rows)[:, None]
        cell = table[r, i, np.clip(j, 0, top)]
        answer = table[r, n, m]
        a_at = np.take_along_axis(a, np.clip(cols, 0, top - 1), axis=1)
        b_at = np.take_along_axis(b, np.clip(cols - n - 1, 0, top - 1), axis=1)
        end = start + n * (m + 1)  # the answer's position
        letter, number = self.N_SPECIAL, self.number_base
        tokens = np.select(
            [cols < n, cols == n, cols <= n + m, cols == n + m + 1,
             (cols < end) & (j <= m), (cols < end) & (i < n), cols < end, cols == end],
            [a_at + letter, self.SEP, b_at + letter, self.SEP,
             cell + number, self.NL, self.ANS, answer + number], self.PAD)
        mask = (cols >= start - 1) & (cols < end)
        return {"tokens": tokens, "targets": next_token_targets(tokens, mask, self.PAD), "mask": mask,
                "len_a": n[:, 0], "len_b": m[:, 0]}

    def token_str(self, token: int) -> str:
        token = int(token)
        if token < self.N_SPECIAL:
            return ("_", "<sep>", "<nl>", "<ans>")[token]
        if token < self.number_base:
            letter = token - self.N_SPECIAL
            return string.ascii_lowercase[letter] if letter < 26 else f"s{letter}"
        return str(token - self.number_base)


#: the tasks this module registers (every module of this package that defines ``TASKS`` is registered)
TASKS = {
    "cot-lis": (LISTask, "longest increasing subsequence with a chain of thought (COPY and CoT)"),
    "cot-ed": (EditDistanceTask, "edit distance with a row-by-row chain of thought (COPY and CoT)"),
}
