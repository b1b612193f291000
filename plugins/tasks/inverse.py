"""Inverse sequence matching (Achilles' Heel §3.4, appendix C.2)."""

from __future__ import annotations

import itertools
from dataclasses import replace
from typing import ClassVar

import numpy as np
import torch

from achilles import Batch, ConfigError, Task, check_int

from ._common import (distinct_ints, draw_excluding, grouped_accuracy, masked_hits, mean, resolve_n_seed, split_rng,
                      to_batch)
from ..papers import ACHILLES_HEEL

N_KEYS = 5  # five of the six permutations
SET_SIZE = 3
BLOCK = SET_SIZE + 1  # a key sequence and its separator
VALUE_RANGES = {"train": (20, 100), "test": (20, 100), "ood": (101, 200)}  # inclusive
PERMS = np.array(list(itertools.permutations(range(SET_SIZE))))  # (6, 3)
# index of each permutation's reverse: the query of answer perm p equals key perm REVERSE[p]
REVERSE = np.array([PERMS.tolist().index(list(p[::-1])) for p in PERMS])


def _residue_classes(low: int, high: int) -> np.ndarray:
    """(3, 27): the values of [low, high] in each class mod 3."""
    values = np.arange(low, high + 1)
    return np.stack([values[values % 3 == r] for r in range(3)])


class InverseTask(Task):
    """Inverse sequence matching (Achilles' Heel §3.4 and appendix C.2; docs/tasks.md `inverse`).

    A generating set of 3 distinct numbers; 5 of its 6 permutations, in random order, are the
    key sequences, each followed by one separator not in the set. Then (conv_width - 1) ·
    n_layers filler tokens not in the set (the pure convolutional receptive field: 3 per layer
    for Mamba's width-4 convolution), then the query: one key sequence reversed. The label at the
    last position is the index 0..4 of that key sequence (chance 20%). Length 5·(3+1) +
    3·n_layers + 3: 29 for 2 layers.

    Values: train and test in [20, 100], OOD in [101, 200]. Train: the set is not all in one
    residue class mod 3; test: it is; OOD: no constraint. 100,000 samples, 80/10/10.

    Settings: ``n_layers`` (default 2; the trainer fills it from the architecture, so Mamba and
    Transformer of equal depth see identical sequences), ``conv_width`` (default 4),
    ``length`` (default: the minimum; a larger length puts more filler before the query, a
    smaller one is refused).

    Choices where the paper is silent:

    - Separators and filler are uniform over the split's value range minus the generating set
      (they may repeat among themselves).
    - The label is the token 0..4 (the answer index itself); vocabulary 0..200, tokens 5..19
      unused. Accuracy is the arg-max over the whole vocabulary at the last position.
    - Train sets are uniform over 3-subsets of [20, 100] not in one class (rejection); test sets
      pick a class uniformly, then 3 distinct values of it; the answer index is uniform.
    - Metrics: ``acc``; ``acc_<split>`` for each split in the batch (a batch joined from several
      splits reports each); ``acc_index_k`` per answer index k; ``forward_match_rate``: how
      often the prediction is the key sequence equal to the query read forwards (the un-reversed
      match a convolution-driven model may pick), over samples where that sequence is present.
    """

    paper = replace(ACHILLES_HEEL, section="§3.4, appendix C.2")
    splits = ("train", "test", "ood")
    headline_metric = "acc"
    headline_split = "test"
    chance: ClassVar[dict] = {"acc": 0.2, **{f"acc_index_{k}": 0.2 for k in range(5)}}  # one of five candidates
    model_settings = ("n_layers",)
    training_defaults: ClassVar[dict] = {"batch_size": 1024}  # appendix D
    model_defaults: ClassVar[dict] = {"d_model": 128}  # appendix E.2

    def __init__(self, n_layers: int = 2, conv_width: int = 4, length: int | None = None) -> None:
        n_layers = check_int("n_layers", n_layers, minimum=1)
        conv_width = check_int("conv_width", conv_width, minimum=1)
        self.padding = (conv_width - 1) * n_layers
        self.min_length = N_KEYS * BLOCK + self.padding + SET_SIZE
        if length is not None:
            length = check_int("length", length)
            if length < self.min_length:
                raise ConfigError("length", f"inverse needs at least {self.min_length} positions for "
                                            f"n_layers={n_layers}, conv_width={conv_width} ({N_KEYS}×{BLOCK} "
                                            f"keys + {self.padding} receptive-field padding + {SET_SIZE} "
                                            f"query), got {length}")
        self._length = self.min_length if length is None else length
        super().__init__(n_layers=n_layers, conv_width=conv_width, length=length)

    @property
    def vocab_size(self) -> int:
        return VALUE_RANGES["ood"][1] + 1

    @property
    def seq_len(self) -> int:
        return self._length

    def split_sizes(self) -> dict[str, int]:
        return {"train": 80_000, "test": 10_000, "ood": 10_000}

    def _generating_sets(self, rng: np.random.Generator, split: str, n: int) -> np.ndarray:
        low, high = VALUE_RANGES[split]
        if split == "test":  # all three in one class mod 3
            classes = _residue_classes(low, high)
            cls = rng.integers(0, 3, n)
            return classes[cls[:, None], distinct_ints(rng, classes.shape[1], (n, SET_SIZE))]
        sets = distinct_ints(rng, high - low + 1, (n, SET_SIZE)) + low
        if split == "train":  # redraw sets that fall in one class (about 10%)
            bad = np.nonzero((sets % 3 == sets[:, :1] % 3).all(1))[0]
            while bad.size:
                sets[bad] = distinct_ints(rng, high - low + 1, (bad.size, SET_SIZE)) + low
                bad = bad[(sets[bad] % 3 == sets[bad, :1] % 3).all(1)]
        return sets

    def generate(self, split: str, n: int | None = None, seed: int = 0) -> Batch:
        split_index, n, seed = resolve_n_seed(self, split, n, seed)
        rng = split_rng(seed, split_index)
        low, high = VALUE_RANGES[split]
        sets = self._generating_sets(rng, split, n)  # (n, 3)
        chosen = np.argsort(rng.random((n, len(PERMS))), axis=1)[:, :N_KEYS]  # 5 of 6 perms
        keys = np.take_along_axis(sets[:, None, :], PERMS[chosen], axis=2)  # (n, 5, 3)
        answer = rng.integers(0, N_KEYS, n)
        rows = np.arange(n)
        query = keys[rows, answer, ::-1]

        filler_count = N_KEYS + self._length - N_KEYS * BLOCK - SET_SIZE  # separators + padding
        filler = draw_excluding(rng, low, high, np.sort(sets, axis=1), (n, filler_count))
        tokens = np.empty((n, self._length), dtype=np.int64)
        blocks = tokens[:, :N_KEYS * BLOCK].reshape(n, N_KEYS, BLOCK)  # a view: writes land in tokens
        blocks[:, :, :SET_SIZE] = keys
        blocks[:, :, SET_SIZE] = filler[:, :N_KEYS]
        tokens[:, N_KEYS * BLOCK:-SET_SIZE] = filler[:, N_KEYS:]
        tokens[:, -SET_SIZE:] = query

        targets = np.zeros_like(tokens)
        targets[:, -1] = answer
        mask = np.zeros(tokens.shape, dtype=bool)
        mask[:, -1] = True  # appendix D: the loss is on the last token only
        forward = (chosen == REVERSE[chosen[rows, answer]][:, None])
        forward_index = np.where(forward.any(1), forward.argmax(1), -1)
        meta = {"answer_index": answer, "forward_index": forward_index, "split": np.full(n, split_index)}
        return to_batch(tokens, targets, mask, meta)

    def metrics(self, logits: torch.Tensor, batch: Batch) -> dict[str, float]:
        correct, row = masked_hits(logits, batch)  # one scored position per sample
        out = {"acc": mean(correct)}
        grouped_accuracy(out, "acc_", correct, batch.meta["split"][row], lambda s: self.splits[s])
        grouped_accuracy(out, "acc_index_", correct, batch.meta["answer_index"][row], str)
        pred = logits[batch.mask.to(logits.device)].argmax(-1).cpu()
        forward = batch.meta["forward_index"][row]
        has = forward >= 0
        if bool(has.any()):
            out["forward_match_rate"] = mean(pred[has] == forward[has])
        return out

    def describe(self, batch: Batch, i: int) -> str:
        t = batch.tokens[i].tolist()
        keys = "  ".join(f"({' '.join(map(str, t[k * BLOCK:k * BLOCK + SET_SIZE]))}) {t[k * BLOCK + SET_SIZE]}"
                         for k in range(N_KEYS))
        pad = " ".join(map(str, t[N_KEYS * BLOCK:-SET_SIZE]))
        query = " ".join(map(str, t[-SET_SIZE:]))
        answer = int(batch.meta["answer_index"][i])
        forward = int(batch.meta["forward_index"][i])
        note = f"; query read forwards is key {forward}" if forward >= 0 else ""
        return f"keys: {keys}  | filler: {pad} | query: ({query}) -> {int(batch.targets[i, -1])}   [answer key {answer}{note}]"


#: the tasks this module registers (every module of this package that defines ``TASKS`` is registered)
TASKS = {"inverse": (InverseTask,
                     "inverse sequence matching: find the key whose reverse is the query (Achilles' Heel §3.4)")}
