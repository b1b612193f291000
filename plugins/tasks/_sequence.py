"""Base of the left-to-right tasks with a problem size (copy, cot-lis, cot-ed): sizes, padding,
hash-disjoint splits and metrics by size."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch

from achilles import Batch, Task, check_int

from ._common import balanced, describe_sequence, fill_split, mean, resolve_n_seed, split_rng, to_batch


class SizedSequenceTask(Task):
    """Train sizes run over [min_size, max_size], test sizes over [min_size, test_max_size] (a size
    is the problem's n, not a sequence length: ``max_len`` is the model's, the longest sequence
    it takes, here ``seq_len``); every
    size gets an equal share of a split. A sample's split is a hash of its tokens (half the hash
    space each), so train and test never share a sample although their sizes overlap. Rows are
    padded with token 0 to ``seq_len``, the length of the largest test problem.

    Subclasses set ``PAD`` (0) and implement ``_layout(rng, sizes) -> dict`` (tokens, targets,
    mask and per-sample meta arrays, already padded to ``seq_len``) and ``_length(size)``."""

    splits = ("train", "test")
    headline_split = "test"
    PAD: ClassVar[int] = 0
    #: run folders written before the sizes were renamed (they were min_len, max_len, test_max_len)
    renamed_settings = {"min_len": "min_size", "max_len": "max_size", "test_max_len": "test_max_size"}
    #: the default number of samples per split
    default_split_sizes: ClassVar[dict[str, int]] = {"train": 100_000, "test": 10_000}

    def _check_sizes(self, min_size: int, max_size: int, test_max_size: int) -> tuple[int, int, int]:
        min_size = check_int("min_size", min_size, minimum=1)
        max_size = check_int("max_size", max_size, minimum=min_size)
        test_max_size = check_int("test_max_size", test_max_size, minimum=max_size)
        return min_size, max_size, test_max_size

    def _size_range(self, split: str) -> tuple[int, int]:
        top = self.config["max_size"] if split == "train" else self.config["test_max_size"]
        return self.config["min_size"], top

    def _length(self, size: int) -> int:
        raise NotImplementedError

    def _layout(self, rng: np.random.Generator, sizes: np.ndarray) -> dict[str, np.ndarray]:
        raise NotImplementedError

    @property
    def seq_len(self) -> int:
        return self._length(self.config["test_max_size"])

    def split_sizes(self) -> dict[str, int]:
        return dict(self.default_split_sizes)

    def generate(self, split: str, n: int | None = None, seed: int = 0) -> Batch:
        split_index, n, seed = resolve_n_seed(self, split, n, seed)
        rng = split_rng(seed, split_index)
        low, high = self._size_range(split)
        sizes = low + balanced(rng, n, high - low + 1)  # equal share per size
        data = fill_split(lambda g, plan: self._layout(g, plan["size"]), rng, {"size": sizes},
                          bucket=split_index, n_buckets=len(self.splits), setting="min_size",
                          why=f"too few distinct problems of some size in [{low}, {high}] to keep "
                              f"train and test apart (raise min_size or the alphabet/value range)",
                          row_tokens=self.seq_len)
        tokens, targets, mask = data.pop("tokens"), data.pop("targets"), data.pop("mask")
        meta = {"size": sizes, **data, "split": np.full(n, split_index)}
        return to_batch(tokens, targets, mask, meta)

    # -- metrics ---------------------------------------------------------------------------
    def _by_size(self, out: dict[str, float], name: str, per_row: torch.Tensor, size: torch.Tensor,
                 per_size: bool = True) -> None:
        """``name``, ``name_n{size}`` for each size present, and ``name_trained_len`` /
        ``name_longer`` (sizes within / beyond max_size) when the batch has both."""
        out[name] = mean(per_row)
        if per_size:
            for s in torch.unique(size).tolist():
                out[f"{name}_n{s}"] = mean(per_row[size == s])
        longer = size > self.config["max_size"]
        if bool(longer.any()) and not bool(longer.all()):
            out[f"{name}_trained_len"] = mean(per_row[~longer])
            out[f"{name}_longer"] = mean(per_row[longer])

    @staticmethod
    def _row_all(hit: torch.Tensor, row: torch.Tensor, n_rows: int) -> torch.Tensor:
        """Per row: every one of its entries is a hit (rows without entries count as hits)."""
        misses = torch.zeros(n_rows, dtype=torch.long).index_add_(0, row, (~hit).long())
        return misses == 0

    def describe(self, batch: Batch, i: int) -> str:
        extra = ", ".join(f"{k}={int(v[i])}" for k, v in batch.meta.items() if k != "split")
        return describe_sequence(self, batch, i, self.PAD, extra)
