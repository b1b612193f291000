"""The composite function task and its fully symmetric variant (Achilles' Heel §3.3, appendix C.1)."""

from __future__ import annotations

from dataclasses import replace
from typing import ClassVar

import numpy as np
import torch

from achilles import Batch, ConfigError, Task, check_int

from ._common import balanced, grouped_accuracy, masked_hits, mean, resolve_n_seed, split_rng, to_batch
from ..papers import ACHILLES_HEEL

SEQ_LEN = 8
KEY_LOW, KEY_HIGH = 20, 99  # keys and filler, inclusive
KEY_POSITIONS = range(1, SEQ_LEN - 1)  # 1-based key position p; the anchors sit at p+1, p+2
TOTAL_SAMPLES = 300_000  # C.1: "the total dataset comprises 300,000 samples"
ANCHOR_SHIFT = {1: 5, 2: 1, 3: -2, 4: -8}  # C.1


def _allowed_keys(split: str) -> tuple[np.ndarray, np.ndarray]:
    """(table, count): table[p-1, :count[p-1]] are the keys allowed at 1-based position p.

    Train: key mod 8 != p mod 8; test: key mod 8 == p mod 8 (C.1's split by congruence class)."""
    keys = np.arange(KEY_LOW, KEY_HIGH + 1)
    rows = []
    for p in KEY_POSITIONS:
        same = keys % SEQ_LEN == p % SEQ_LEN
        rows.append(keys[same] if split == "test" else keys[~same])
    count = np.array([len(r) for r in rows])
    table = np.zeros((len(rows), count.max()), dtype=np.int64)
    for j, r in enumerate(rows):
        table[j, :len(r)] = r
    return table, count


def _pair_name(pair: int) -> str:
    return f"{pair // 10}{pair % 10}"


class _AnchorPairTask(Task):
    """Shared machinery: one key followed directly by an anchor pair in a length-8 sequence of
    filler from [20, 99]; the label at the last position is key + shift(pair).

    Capability ``pair_shift``: ``pair_shift`` below is the label table, anchor k is token k, and
    ``meta["key_pos"]`` holds the key's 1-based position (the anchors follow it)."""

    splits = ("train", "test")
    capabilities = ("pair_shift",)
    headline_split = "test"
    training_defaults: ClassVar[dict] = {"batch_size": 2048}  # appendix D

    #: ordered pair (a, b) -> shift applied to the key; the label rule
    pair_shift: ClassVar[dict[tuple[int, int], int]] = {}
    held_out: ClassVar[tuple[int, int]] = (4, 3)
    #: train share per pair and test share per pair, of TOTAL_SAMPLES (appendix C.1)
    train_share: ClassVar[float] = 0.0
    test_share: ClassVar[float] = 0.0

    def __init__(self) -> None:
        super().__init__()
        self._pairs = {"train": [p for p in self.pair_shift if p != self.held_out],
                       "test": list(self.pair_shift)}

    @property
    def vocab_size(self) -> int:
        # every token and label is a plain number; the largest is the largest label
        return KEY_HIGH + max(self.pair_shift.values()) + 1

    @property
    def seq_len(self) -> int:
        return SEQ_LEN

    def split_sizes(self) -> dict[str, int]:
        return {"train": round(TOTAL_SAMPLES * self.train_share) * len(self._pairs["train"]),
                "test": round(TOTAL_SAMPLES * self.test_share) * len(self._pairs["test"])}

    def generate(self, split: str, n: int | None = None, seed: int = 0) -> Batch:
        split_index, n, seed = resolve_n_seed(self, split, n, seed)
        rng = split_rng(seed, split_index)
        pairs = np.array(self._pairs[split])  # (P, 2)
        shifts = np.array([self.pair_shift[tuple(p)] for p in pairs.tolist()])
        which = balanced(rng, n, len(pairs))  # every pair gets the same share
        key_pos = rng.integers(KEY_POSITIONS.start, KEY_POSITIONS.stop, n)  # 1-based
        table, count = _allowed_keys(split)
        key = table[key_pos - 1, rng.integers(0, count[key_pos - 1])]

        tokens = rng.integers(KEY_LOW, KEY_HIGH + 1, (n, SEQ_LEN))  # filler, same range as the key
        rows = np.arange(n)
        tokens[rows, key_pos - 1] = key
        tokens[rows, key_pos] = pairs[which, 0]
        tokens[rows, key_pos + 1] = pairs[which, 1]
        targets = np.zeros_like(tokens)
        targets[:, -1] = key + shifts[which]
        mask = np.zeros(tokens.shape, dtype=bool)
        mask[:, -1] = True  # appendix D: the loss is on the last token only
        meta = {"pair": pairs[which, 0] * 10 + pairs[which, 1], "key": key, "key_pos": key_pos,
                "split": np.full(n, split_index)}
        return to_batch(tokens, targets, mask, meta)

    def _held_out_truths(self) -> dict[str, int]:
        """Name -> shift of each rule the held-out pair is scored against."""
        raise NotImplementedError

    def metrics(self, logits: torch.Tensor, batch: Batch) -> dict[str, float]:
        correct, row = masked_hits(logits, batch)  # one scored position per sample
        pair = batch.meta["pair"][row]
        out = {"acc": mean(correct)}
        held = self.held_out[0] * 10 + self.held_out[1]
        seen = pair != held
        if bool(seen.any()) and not bool(seen.all()):
            out["acc_seen_pairs"] = mean(correct[seen])
        grouped_accuracy(out, "acc_pair_", correct, pair, _pair_name)
        if bool((~seen).any()):
            pred = logits[batch.mask.to(logits.device)].argmax(-1).cpu()[~seen]
            key = batch.meta["key"][row][~seen]
            for name, shift in self._held_out_truths().items():
                out[f"acc_{_pair_name(held)}_{name}"] = mean(pred == key + shift)
        return out

    def describe(self, batch: Batch, i: int) -> str:
        tokens = batch.tokens[i].tolist()
        p = int(batch.meta["key_pos"][i])
        shown = [f"[{t}]" if j == p - 1 else str(t) for j, t in enumerate(tokens)]
        pair = int(batch.meta["pair"][i])
        label = f"-> {int(batch.targets[i, -1])}"
        if (pair // 10, pair % 10) == self.held_out:
            key = int(batch.meta["key"][i])
            label += " (" + ", ".join(f"{n} {key + s}" for n, s in self._held_out_truths().items()) + ")"
        return f"{' '.join(shown):<34} {label:<30} pair {_pair_name(pair)}, key {tokens[p - 1]} at position {p}"


class CompositeTask(_AnchorPairTask):
    """Composite function task (Achilles' Heel §3.3 and appendix C.1; docs/tasks.md `composite`).

    A length-8 sequence of numbers from [20, 99] holds one key at 1-based position p (1..6)
    followed directly by an anchor pair ``a b`` (anchors are tokens 1-4 with shifts +5, +1, -2,
    -8). The label at the last position is key + shift(a) + shift(b), except pair 34, whose label
    is key - 6. Pair 43 never appears in train; the test split holds all 16 pairs and scores 43
    against its composite truth (key - 10, also its label) and its symmetric truth (key - 6).
    Split by position: in train a key never sits at a position p with key ≡ p (mod 8); in test
    every key does.

    Choices where the paper is silent:

    - Vocabulary 0..109, one number per token: anchors 1-4, keys and filler 20-99, labels 4-109
      (20 - 16 for pair 44 up to 99 + 10 for pair 11). Labels never wrap around.
    - p is uniform over 1..6, then the key uniform over the keys allowed at p (70 per position
      in train, 10 in test; keys ≡ 0 or 7 mod 8 therefore never occur in test).
    - Filler tokens are uniform over [20, 99] with no constraint (they may repeat the key).
    - Split sizes follow C.1's per-pair shares of 300,000: 5.6% per train pair (15 × 16,800 =
      252,000) and 0.6% per test pair (16 × 1,800 = 28,800); the shares as printed sum to 93.6%,
      so the total is 280,800. Every pair gets an exactly equal share of any ``n``.
    - Metrics: ``acc`` (against the label), ``acc_pair_XY`` for each pair present,
      ``acc_seen_pairs`` (test pairs other than 43), ``acc_43_composite`` and
      ``acc_43_symmetric``; all are arg-max accuracies over the whole vocabulary.
    """

    paper = replace(ACHILLES_HEEL, section="§3.3, appendix C.1 (Standard)")
    pair_shift = {(a, b): ANCHOR_SHIFT[a] + ANCHOR_SHIFT[b] for a in ANCHOR_SHIFT for b in ANCHOR_SHIFT}
    pair_shift[(3, 4)] = -6  # C.1: pair 34 is set to -6 instead of the composition -10
    train_share, test_share = 0.056, 0.006
    headline_metric = "acc_43_composite"
    phase_metrics = ("acc_43_composite", "acc_43_symmetric")  # figure 4: both solutions side by side
    model_defaults: ClassVar[dict] = {"d_model": 32}  # appendix E.1.1

    def _held_out_truths(self) -> dict[str, int]:
        return {"composite": ANCHOR_SHIFT[4] + ANCHOR_SHIFT[3], "symmetric": self.pair_shift[(3, 4)]}


#: full-symmetry function sets (C.1); set 2 has no function for anchor 4 in the paper
SET1 = {0: 2, 1: 5, 2: 1, 3: -2, 4: -8}
SET2 = {0: -9, 1: 6, 2: -7, 3: 3}
SET1_PAIRS = ["01", "02", "10", "20", "14", "41", "23", "32", "34", "43"]
SET2_PAIRS = ["03", "30", "04", "40", "12", "21", "13", "31", "24", "42"]


class CompositeSymmetricTask(_AnchorPairTask):
    """Composite function task under full symmetry (appendix C.1 "Full symmetry";
    docs/tasks.md `composite-symmetric`).

    Anchors 0..4, the 20 ordered pairs without repeats. Pairs 01 02 10 20 14 41 23 32 34 43
    compose set 1 (0:+2, 1:+5, 2:+1, 3:-2, 4:-8); pairs 03 30 04 40 12 21 13 31 24 42 compose
    set 2 (0:-9, 1:+6, 2:-7, 3:+3, 4: see below). Every pair's function equals its mirror's, so
    the held-out 43 is determined only by symmetry with 34 (key - 10). Everything else (length
    8, keys and filler in [20, 99], the mod-8 position split) is as in ``composite``.

    Choices where the paper is silent:

    - The paper lists no set-2 function for anchor 4 although pairs 04 40 24 42 follow set 2;
      ``set2_anchor4_shift`` (default +5) fills it. +5 keeps every label in range and gives 04
      (-4), 24 (-2) and a set-2 reading of 43 (+8) that no other pair shares.
    - Split sizes from C.1's shares: 4.5% per train pair (19 × 13,500 = 256,500) and 0.5% per
      test pair (20 × 1,500 = 30,000); total 286,500.
    - Metrics: ``acc``, ``acc_pair_XY``, ``acc_seen_pairs``, ``acc_43_symmetric`` (key - 10,
      also the label) and ``acc_43_set2`` (key + set2[4] + set2[3], the composition a model
      would pick if it read 4 and 3 with set 2).
    """

    paper = replace(ACHILLES_HEEL, section="appendix C.1 (Full symmetry), E.1.4")
    train_share, test_share = 0.045, 0.005
    headline_metric = "acc_43_symmetric"
    phase_metrics = ("acc_43_symmetric", "acc_43_set2")  # its two readings of 43 side by side
    model_defaults: ClassVar[dict] = {"d_model": 128}  # appendix E.1.4

    def __init__(self, set2_anchor4_shift: int = 5) -> None:
        shift = check_int("set2_anchor4_shift", set2_anchor4_shift, minimum=-20, maximum=20)
        set2 = {**SET2, 4: shift}
        table = {}
        for names, functions in ((SET1_PAIRS, SET1), (SET2_PAIRS, set2)):
            for name in names:
                a, b = int(name[0]), int(name[1])
                table[(a, b)] = functions[a] + functions[b]
        if KEY_LOW + min(table.values()) < 0:
            raise ConfigError("set2_anchor4_shift", f"labels would go below 0 (lowest {KEY_LOW + min(table.values())})")
        self.pair_shift = table  # instance attribute: depends on the setting
        self._set2 = set2
        super().__init__()
        self.config = {"set2_anchor4_shift": shift}

    def _held_out_truths(self) -> dict[str, int]:
        return {"symmetric": self.pair_shift[(3, 4)], "set2": self._set2[4] + self._set2[3]}


#: the tasks this module registers (every module of this package that defines ``TASKS`` is registered)
TASKS = {
    "composite": (CompositeTask,
                  "composite function task: key + anchor pair; 43 held out (Achilles' Heel §3.3)"),
    "composite-symmetric": (CompositeSymmetricTask,
                            "composite function task under full symmetry, anchors 0-4 (Achilles' Heel C.1)"),
}
