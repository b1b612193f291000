"""Multi-query associative recall with placement, n-gram and noise variants
(Revealing and Mitigating the Local Pattern Shortcuts of Mamba; Zoology's MQAR)."""

from __future__ import annotations

import re
from dataclasses import replace

import numpy as np
import torch

from achilles import Batch, ConfigError, Task, check_int

from ._common import (balanced, check_bool, check_choices, distinct_ints, fill_split, grouped_accuracy, in_rows,
                      masked_hits, mean, power_law_slots, resolve_n_seed, split_rng, to_batch)
from ..papers import LOCAL_PATTERN_SHORTCUTS

PLACEMENTS = ("standard", "last", "shuffle")
PAD, S1, S2 = 0, 1, 2  # filler without noise; the two n-gram delimiters
N_SPECIAL = 3
_NGRAM = re.compile(r"K([1-9][0-9]*)V([1-9][0-9]*)")
NGRAM_FORM = "n-grams are written KkVv with k, v >= 1, e.g. K1V1 or K2V4"


def parse_ngram(name: str) -> tuple[int, int]:
    """'K2V3' -> (2, 3)."""
    match = _NGRAM.fullmatch(name)
    if not match:
        raise ValueError(name)
    return int(match.group(1)), int(match.group(2))


class MQARTask(Task):
    """Multi-query associative recall (docs/tasks.md `mqar`; Zoology's MQAR with the placement,
    n-gram and noise variants of "Revealing and Mitigating the Local Pattern Shortcuts of Mamba").

    Keys and values come from disjoint halves of the vocabulary. The first half of the sequence
    (the context) holds ``n_pairs`` key-value blocks; the second half holds ``n_queries`` query
    blocks, each repeating one key; after each queried key the target is its value. Loss and
    accuracy are on the value tokens of the queries only.

    - ``placements`` (train) / ``test_placements``: where the context blocks sit in the first
      half: ``standard`` contiguous from position 0, ``last`` contiguous and ending at the middle,
      ``shuffle`` at uniformly random non-overlapping positions of the first half.
    - ``ngrams`` (train) / ``test_ngrams``: ``KkVv`` blocks of k key and v value tokens. With
      delimiters a block is ``<s1> k1..kk <s2> v1..vv <s1>``; without (plain K1V1) it is
      Zoology's ``key value`` bigram.
    - ``noise``: filler holds random tokens instead of the pad token.
    - Grid: ``length`` × ``n_pairs`` from (64, 4) up to (512, 128).

    The paper's probes: train ``placements=standard`` and read ``acc_last``/``acc_shuffle`` on
    test (Mamba: 99.72 on standard, 15.44 and 22.37 on the other two; docs/tasks.md says which
    order is uncertain); train ``ngrams=K1V1,K1V2``, ``test_ngrams=K2V2``.

    Choices where the papers are silent:

    - Tokens: 0 pad, 1 ``<s1>``, 2 ``<s2>``; keys 3..V/2-1, values V/2..V-1 (V = vocab_size,
      default 8,192). Within a sample all key tokens are distinct and all value tokens are
      distinct, so every key (and k-gram) names one value.
    - A query block repeats the whole context block (teacher forcing): the value tokens follow
      the queried key as input, and the target at each position before a value token is that
      value token (for K1V1: the target at the queried key is its value, as in Zoology).
    - Query slots: the second half is cut into blocks; slots are drawn without replacement with
      Zoology's power law p(s) ∝ a·(s+1)^(a-1) (``power_a``, default 0.01: early slots are
      likely). By default every key is queried once (``n_queries`` = ``n_pairs``); with fewer,
      a uniformly random subset is queried. The queried pairs take the drawn slots in random
      order (Zoology gives the i-th context pair the i-th drawn slot, which ties early context
      pairs to early queries; here the context position says nothing about the query position).
    - Delimiters (``delimiters``, default: on whenever some configured n-gram is not K1V1, so
      train and test share one format).
    - Noise tokens are uniform over the key and value tokens that this sample's pairs do not
      use, so noise never repeats a key or value of the sample.
    - Test mixes every (test placement, test n-gram) combination in equal shares; train likewise
      over the train ones. Train and test never share a sample: a sample's split is a hash of
      its tokens (half the hash space each); rejected draws are redrawn.
    - Split sizes (Zoology's usual): train 100,000, test 3,000.
    - Metrics: ``acc`` (value tokens), ``query_acc`` (queries with every value token right),
      ``acc_<placement>`` and ``acc_<ngram>`` for each in the batch, and
      ``acc_<placement>_<ngram>`` when the batch mixes both; ``acc_shuffle_moved``: shuffled samples
      none of whose blocks starts where the standard placement puts it (the rest overlap the
      trained placement).
    """

    paper = replace(LOCAL_PATTERN_SHORTCUTS, section="§3.2 (positions), §3.3 (n-grams), §5.2.1 (noise)")
    variant_settings = ("placements", "ngrams", "test_placements", "test_ngrams", "noise")
    splits = ("train", "test")
    headline_metric = "acc"
    headline_split = "test"

    def __init__(self, vocab_size: int = 8192, length: int = 64, n_pairs: int = 4,
                 n_queries: int | None = None, placements: list[str] | str = "standard",
                 test_placements: list[str] | str = "standard,last,shuffle",
                 ngrams: list[str] | str = "K1V1", test_ngrams: list[str] | str | None = None,
                 noise: bool = False, power_a: float = 0.01, delimiters: bool | None = None) -> None:
        vocab_size = check_int("vocab_size", vocab_size, minimum=N_SPECIAL + 2)
        length = check_int("length", length, minimum=4)
        n_pairs = check_int("n_pairs", n_pairs, minimum=1)
        n_queries = n_pairs if n_queries is None else check_int("n_queries", n_queries, minimum=1, maximum=n_pairs)
        placements = check_choices("placements", placements, PLACEMENTS)
        test_placements = check_choices("test_placements", test_placements, PLACEMENTS)
        ngrams = check_choices("ngrams", ngrams, parse=parse_ngram, form=NGRAM_FORM)
        test_ngrams = (ngrams if test_ngrams is None
                       else check_choices("test_ngrams", test_ngrams, parse=parse_ngram, form=NGRAM_FORM))
        noise = check_bool("noise", noise)
        if isinstance(power_a, bool) or not isinstance(power_a, (int, float)) or not 0 < power_a <= 1:
            raise ConfigError("power_a", f"must be a number in (0, 1], got {power_a!r}")
        all_ngrams = [parse_ngram(g) for g in ngrams + test_ngrams]
        if delimiters is None:
            delimiters = any(kv != (1, 1) for kv in all_ngrams)
        delimiters = check_bool("delimiters", delimiters)

        self.n_keys = vocab_size // 2 - N_SPECIAL  # key tokens N_SPECIAL .. V/2-1
        self.n_values = vocab_size - vocab_size // 2
        half = length // 2
        for k, v in all_ngrams:
            block = k + v + (3 if delimiters else 0)
            name = f"K{k}V{v}"
            if n_pairs * block > half:
                raise ConfigError("n_pairs", f"{n_pairs} {name} pairs need {n_pairs * block} positions "
                                             f"({block} each) but the context (first half of length "
                                             f"{length}) has {half}")
            if n_queries > (length - half) // block:
                raise ConfigError("n_queries" if n_queries != n_pairs else "n_pairs",
                                  f"{n_queries} {name} queries need {n_queries} blocks of {block} but the "
                                  f"second half of length {length} holds {(length - half) // block}")
            if n_pairs * k > self.n_keys or n_pairs * v > self.n_values:
                raise ConfigError("vocab_size", f"{n_pairs} {name} pairs need {n_pairs * k} distinct key and "
                                                f"{n_pairs * v} distinct value tokens; vocab_size {vocab_size} "
                                                f"has {self.n_keys} and {self.n_values}")
            if noise and n_pairs * (k + v) >= self.n_keys + self.n_values:
                raise ConfigError("vocab_size", "no token left for noise")
        self.delimiters = delimiters
        super().__init__(vocab_size=vocab_size, length=length, n_pairs=n_pairs, n_queries=n_queries,
                         placements=placements, test_placements=test_placements, ngrams=ngrams,
                         test_ngrams=test_ngrams, noise=noise,
                         power_a=float(power_a), delimiters=delimiters)
        self._variants = {"train": (placements, ngrams), "test": (test_placements, test_ngrams)}

    @property
    def vocab_size(self) -> int:
        return self.config["vocab_size"]

    @property
    def seq_len(self) -> int:
        return self.config["length"]

    def split_sizes(self) -> dict[str, int]:
        return {"train": 100_000, "test": 3_000}

    # -- generation ------------------------------------------------------------------------
    def _make_group(self, rng: np.random.Generator, rows: int, placement: str, k: int, v: int) -> dict:
        """``rows`` samples of one placement and n-gram: tokens, targets and mask."""
        cfg = self.config
        length, half, pairs, queries = cfg["length"], cfg["length"] // 2, cfg["n_pairs"], cfg["n_queries"]
        vocab = cfg["vocab_size"]
        delim = 1 if self.delimiters else 0
        block = k + v + 3 * delim
        value_at = k + 2 * delim  # offset of the first value token inside a block

        keys = distinct_ints(rng, self.n_keys, (rows, pairs * k)).reshape(rows, pairs, k) + N_SPECIAL
        values = distinct_ints(rng, self.n_values, (rows, pairs * v)).reshape(rows, pairs, v) + vocab // 2
        blocks = np.empty((rows, pairs, block), dtype=np.int64)
        blocks[:, :, delim:delim + k] = keys
        blocks[:, :, value_at:value_at + v] = values
        if delim:
            blocks[:, :, 0] = S1
            blocks[:, :, k + 1] = S2
            blocks[:, :, -1] = S1

        step = np.arange(pairs) * block
        if placement == "standard":
            starts = np.broadcast_to(step, (rows, pairs))
        elif placement == "last":
            starts = np.broadcast_to(half - pairs * block + step, (rows, pairs))
        else:  # shuffle: a uniform arrangement of `pairs` blocks and the free cells of the first half
            gaps = np.sort(distinct_ints(rng, half - pairs * block + pairs, (rows, pairs)), axis=1)
            starts = gaps + np.arange(pairs) * (block - 1)

        asked = np.argsort(rng.random((rows, pairs)), axis=1)[:, :queries]  # which pairs are queried
        slots = power_law_slots(rng, rows, (length - half) // block, queries, cfg["power_a"])
        query_starts = half + slots * block

        if cfg["noise"]:
            used = np.concatenate([keys.reshape(rows, -1), values.reshape(rows, -1)], axis=1)
            tokens = rng.integers(N_SPECIAL, vocab, (rows, length))
            clash = in_rows(tokens, used)
            while clash.any():  # redraw noise that repeats one of this sample's keys or values
                tokens[clash] = rng.integers(N_SPECIAL, vocab, int(clash.sum()))
                clash = in_rows(tokens, used)
        else:
            tokens = np.full((rows, length), PAD, dtype=np.int64)
        r = np.arange(rows)[:, None, None]
        offsets = np.arange(block)
        tokens[r, starts[:, :, None] + offsets] = blocks
        asked_blocks = np.take_along_axis(blocks, asked[:, :, None], axis=1)
        tokens[r, query_starts[:, :, None] + offsets] = asked_blocks

        targets = np.zeros_like(tokens)
        mask = np.zeros(tokens.shape, dtype=bool)
        scored = query_starts[:, :, None] + value_at - 1 + np.arange(v)  # positions before each value token
        targets[r, scored] = asked_blocks[:, :, value_at:value_at + v]
        mask[r, scored] = True
        # a sample overlaps the trained (standard) placement when some block starts where it would there
        moved = ~(starts == step[None, :]).any(axis=1)
        return {"tokens": tokens, "targets": targets, "mask": mask, "moved": moved}

    def _make(self, rng: np.random.Generator, plan: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        n, length = len(plan["placement"]), self.config["length"]
        out = {"tokens": np.zeros((n, length), dtype=np.int64), "targets": np.zeros((n, length), dtype=np.int64),
               "mask": np.zeros((n, length), dtype=bool), "moved": np.zeros(n, dtype=bool)}
        for p in np.unique(plan["placement"]):
            for kv in np.unique(plan["ngram"], axis=0):
                idx = np.nonzero((plan["placement"] == p) & (plan["ngram"] == kv).all(1))[0]
                if idx.size:
                    group = self._make_group(rng, idx.size, PLACEMENTS[p], int(kv[0]), int(kv[1]))
                    for key, value in group.items():
                        out[key][idx] = value
        return out

    def generate(self, split: str, n: int | None = None, seed: int = 0) -> Batch:
        split_index, n, seed = resolve_n_seed(self, split, n, seed)
        rng = split_rng(seed, split_index)
        placements, ngrams = self._variants[split]
        combos = [(PLACEMENTS.index(p), *parse_ngram(g)) for p in placements for g in ngrams]
        variant = np.array(combos)[balanced(rng, n, len(combos))]  # equal shares
        plan = {"placement": variant[:, 0], "ngram": variant[:, 1:]}
        data = fill_split(self._make, rng, plan, bucket=split_index, n_buckets=len(self.splits),
                          setting="vocab_size", why="too few distinct samples to keep train and test apart",
                          row_tokens=self.seq_len)
        meta = {"placement": plan["placement"], "key_len": plan["ngram"][:, 0], "value_len": plan["ngram"][:, 1],
                "split": np.full(n, split_index), "moved": data["moved"]}
        return to_batch(data["tokens"], data["targets"], data["mask"], meta)

    # -- metrics and display ---------------------------------------------------------------
    def metrics(self, logits: torch.Tensor, batch: Batch) -> dict[str, float]:
        correct, row = masked_hits(logits, batch)
        placement = batch.meta["placement"][row]
        ngram = batch.meta["key_len"][row] * 1000 + batch.meta["value_len"][row]
        ngram_name = lambda g: f"K{g // 1000}V{g % 1000}"
        out = {"acc": mean(correct)}
        # a query's value tokens are consecutive among the scored positions of its row
        value_len = batch.meta["value_len"][row]
        exact = [correct[value_len == v].reshape(-1, v).all(1) for v in torch.unique(value_len).tolist()]
        out["query_acc"] = mean(torch.cat(exact)) if exact else float("nan")
        grouped_accuracy(out, "acc_", correct, placement, lambda p: PLACEMENTS[p])
        grouped_accuracy(out, "acc_", correct, ngram, ngram_name)
        if "moved" in batch.meta:  # shuffle samples none of whose blocks sits where the trained placement puts it
            moved = (placement == PLACEMENTS.index("shuffle")) & (batch.meta["moved"][row] == 1)
            if bool(moved.any()):
                out["acc_shuffle_moved"] = mean(correct[moved])
        if len(torch.unique(placement)) > 1 and len(torch.unique(ngram)) > 1:
            combo = placement * 1_000_000 + ngram
            grouped_accuracy(out, "acc_", correct, combo,
                             lambda c: f"{PLACEMENTS[c // 1_000_000]}_{ngram_name(c % 1_000_000)}")
        return out

    def token_str(self, token: int) -> str:
        token = int(token)
        if token < N_SPECIAL:
            return ("_", "<s1>", "<s2>")[token]
        half = self.vocab_size // 2
        return f"k{token}" if token < half else f"v{token - half}"

    def describe(self, batch: Batch, i: int) -> str:
        tokens = batch.tokens[i].tolist()
        targets, mask = batch.targets[i].tolist(), batch.mask[i].tolist()
        half = len(tokens) // 2
        shown = [self.token_str(t) + (f"→{self.token_str(y)}" if m else "") for t, y, m in zip(tokens, targets, mask)]
        variant = (f"{PLACEMENTS[int(batch.meta['placement'][i])]}, "
                   f"K{int(batch.meta['key_len'][i])}V{int(batch.meta['value_len'][i])}")
        return (f"[{variant}]\n      context: {' '.join(shown[:half])}\n"
                f"      queries: {' '.join(shown[half:])}")


#: the tasks this module registers (every module of this package that defines ``TASKS`` is registered)
TASKS = {"mqar": (MQARTask, "multi-query associative recall with placement, n-gram and noise variants")}
