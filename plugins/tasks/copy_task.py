"""COPY (Exploring the Limitations of Mamba in COPY and CoT Reasoning)."""

from __future__ import annotations

import string
from dataclasses import replace

import numpy as np
import torch

from achilles import Batch, check_int

from ._common import masked_hits, next_token_targets
from ..papers import COPY_AND_COT
from ._sequence import SizedSequenceTask

PAD, SEP = 0, 1
N_SPECIAL = 2


class CopyTask(SizedSequenceTask):
    """COPY (docs/tasks.md `copy`; Ren, Li & Liu, "Exploring the Limitations of Mamba in COPY and
    CoT Reasoning"): a random string of length n, a separator, then the same string again;
    the model predicts the copy token by token. Loss on the copied half.

    Choices where the paper is silent:

    - Tokens: 0 pad, 1 separator ``|``, then ``alphabet_size`` symbols (default 26, shown as
      a..z). Symbols are uniform and independent.
    - Lengths: train n uniform over [``min_size``, ``max_size``] = [1, 20]; test n over [1,
      ``test_max_size`` = 40], so the test split has the trained lengths and longer ones. Each
      length gets an equal share of a split. Rows are padded to 2·40 + 1 = 81.
    - Scored positions: the separator and the first n-1 copied symbols, each predicting the next
      symbol (n targets); no end-of-string token is scored.
    - Metrics are teacher-forced: ``acc`` (per copied token) and ``exact`` (all n right, which
      equals exact-match under greedy decoding), each also per length (``acc_n7``,
      ``exact_n7``) and for trained versus longer lengths (``exact_trained_len``,
      ``exact_longer``).
    - Train and test never share a string: a sample's split is a hash of its tokens. Split sizes:
      train 100,000, test 10,000.
    """

    paper = replace(COPY_AND_COT, section="COPY experiments (figure 3)")
    headline_metric = "exact"

    def __init__(self, alphabet_size: int = 26, min_size: int = 1, max_size: int = 20,
                 test_max_size: int = 40) -> None:
        alphabet_size = check_int("alphabet_size", alphabet_size, minimum=2)
        min_size, max_size, test_max_size = self._check_sizes(min_size, max_size, test_max_size)
        super().__init__(alphabet_size=alphabet_size, min_size=min_size, max_size=max_size,
                         test_max_size=test_max_size)

    @property
    def vocab_size(self) -> int:
        return N_SPECIAL + self.config["alphabet_size"]

    def _length(self, size: int) -> int:
        return 2 * size + 1

    def _layout(self, rng: np.random.Generator, sizes: np.ndarray) -> dict[str, np.ndarray]:
        width, top = self.seq_len, self.config["test_max_size"]
        symbols = rng.integers(0, self.config["alphabet_size"], (len(sizes), top)) + N_SPECIAL
        cols = np.arange(width)[None, :]
        n = sizes[:, None]
        source = np.take_along_axis(symbols, np.clip(np.where(cols < n, cols, cols - n - 1), 0, top - 1), axis=1)
        tokens = np.where(cols < n, source,
                          np.where(cols == n, SEP, np.where(cols <= 2 * n, source, PAD)))
        mask = (cols >= n) & (cols < 2 * n)
        return {"tokens": tokens, "targets": next_token_targets(tokens, mask, PAD), "mask": mask}

    def metrics(self, logits: torch.Tensor, batch: Batch) -> dict[str, float]:
        correct, row = masked_hits(logits, batch)
        size = batch.meta["size"]
        out: dict[str, float] = {}
        self._by_size(out, "acc", correct, size[row])
        self._by_size(out, "exact", self._row_all(correct, row, len(batch)), size)
        return out

    def token_str(self, token: int) -> str:
        token = int(token)
        if token < N_SPECIAL:
            return ("_", "|")[token]
        symbol = token - N_SPECIAL
        return string.ascii_lowercase[symbol] if self.config["alphabet_size"] <= 26 else f"s{symbol}"


#: the tasks this module registers (every module of this package that defines ``TASKS`` is registered)
TASKS = {"copy": (CopyTask, "copy a random string after a separator (COPY and CoT)")}
