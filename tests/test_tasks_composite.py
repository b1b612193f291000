"""`composite` and `composite-symmetric` against docs/tasks.md and appendix C.1 of Achilles' Heel."""

from collections import Counter

import pytest
import torch
from hypothesis import given, settings, strategies as st

import achilles

SHIFT = {1: 5, 2: 1, 3: -2, 4: -8}
SET1 = {0: 2, 1: 5, 2: 1, 3: -2, 4: -8}
SET2 = {0: -9, 1: 6, 2: -7, 3: 3, 4: 5}  # anchor 4: the task's documented default
SET1_PAIRS = {"01", "02", "10", "20", "14", "41", "23", "32", "34", "43"}


def composite_label(key, a, b):
    return key - 6 if (a, b) == (3, 4) else key + SHIFT[a] + SHIFT[b]


def symmetric_label(key, a, b):
    functions = SET1 if f"{a}{b}" in SET1_PAIRS else SET2
    return key + functions[a] + functions[b]


def parse(row, anchors):
    """(key position 1-based, key, a, b) read off the tokens alone."""
    where = [j for j, t in enumerate(row) if t in anchors]
    assert len(where) == 2 and where[1] == where[0] + 1, row
    p = where[0]  # 0-based index of the first anchor = 1-based key position
    assert p >= 1
    return p, row[p - 1], row[p], row[p + 1]


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 300), split=st.sampled_from(["train", "test"]))
def test_composite_every_sample_recomputes_from_key_and_anchors(seed, n, split):
    task = achilles.get_task("composite")
    batch = task.generate(split, n, seed=seed)
    assert batch.mask[:, -1].all() and batch.mask.sum() == n  # last position only
    for row, target, pair, key, key_pos in zip(batch.tokens.tolist(), batch.targets[:, -1].tolist(),
                                               batch.meta["pair"].tolist(), batch.meta["key"].tolist(),
                                               batch.meta["key_pos"].tolist()):
        p, k, a, b = parse(row, {1, 2, 3, 4})
        assert (p, k, 10 * a + b) == (key_pos, key, pair)
        assert 20 <= k <= 99 and all(20 <= t <= 99 for j, t in enumerate(row) if j not in (p, p + 1))
        assert target == composite_label(k, a, b)
        if split == "train":
            assert k % 8 != p % 8 and (a, b) != (4, 3)
        else:
            assert k % 8 == p


def test_composite_splits_sizes_and_pair_shares():
    task = achilles.get_task("composite")
    assert task.split_sizes() == {"train": 15 * 16_800, "test": 16 * 1_800}
    assert task.seq_len == 8 and task.vocab_size == 110
    train = Counter(task.generate("train", 15 * 40).meta["pair"].tolist())
    assert set(train) == {10 * a + b for a in SHIFT for b in SHIFT} - {43}
    assert set(train.values()) == {40}
    test = task.generate("test", 16 * 30)
    assert set(Counter(test.meta["pair"].tolist()).values()) == {30} and 43 in test.meta["pair"]
    assert set(test.meta["key_pos"].tolist()) == set(range(1, 7))


def test_composite_43_is_scored_against_both_truths():
    task = achilles.get_task("composite")
    batch = task.generate("test", 800, seed=5)
    is43 = batch.meta["pair"] == 43
    assert torch.equal(batch.targets[is43, -1], batch.meta["key"][is43] - 10)
    symmetric = batch.targets[:, -1].clone()
    symmetric[is43] = batch.meta["key"][is43] - 6
    logits = torch.nn.functional.one_hot(symmetric, task.vocab_size).float()[:, None, :].expand(-1, 8, -1)
    scores = task.metrics(logits, batch)
    assert scores["acc_43_symmetric"] == 1.0 and scores["acc_43_composite"] == 0.0
    assert scores["acc_pair_34"] == 1.0 and scores["acc_seen_pairs"] == 1.0
    assert scores["acc"] == pytest.approx(1 - float(is43.float().mean()))
    assert {f"acc_pair_{a}{b}" for a in SHIFT for b in SHIFT} <= set(scores)


def test_composite_train_has_no_43_metrics():
    task = achilles.get_task("composite")
    batch = task.generate("train", 200)
    scores = task.metrics(torch.zeros(200, 8, task.vocab_size), batch)
    assert "acc_43_composite" not in scores and "acc_pair_43" not in scores


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), split=st.sampled_from(["train", "test"]))
def test_symmetric_variant_follows_both_function_sets(seed, split):
    task = achilles.get_task("composite-symmetric")
    batch = task.generate(split, 200, seed=seed)
    pairs = set()
    for row, target in zip(batch.tokens.tolist(), batch.targets[:, -1].tolist()):
        p, k, a, b = parse(row, {0, 1, 2, 3, 4})
        assert a != b and target == symmetric_label(k, a, b)
        assert (k % 8 == p) == (split == "test")
        pairs.add(f"{a}{b}")
    assert ("43" in pairs) == (split == "test")


def test_symmetric_variant_pairs_and_sizes():
    task = achilles.get_task("composite-symmetric")
    assert task.split_sizes() == {"train": 19 * 13_500, "test": 20 * 1_500}
    shifts = task.pair_shift
    assert len(shifts) == 20 and all(shifts[(a, b)] == shifts[(b, a)] for a, b in shifts)
    batch = task.generate("test", 2000)
    is43 = batch.meta["pair"] == 43
    assert torch.equal(batch.targets[is43, -1], batch.meta["key"][is43] - 10)  # = 34's function
    scores = task.metrics(torch.nn.functional.one_hot(batch.targets, task.vocab_size).float(), batch)
    assert scores["acc_43_symmetric"] == 1.0 and scores["acc_43_set2"] == 0.0
    assert "acc_pair_01" in scores


def test_symmetric_variant_anchor4_setting_is_checked():
    assert achilles.get_task("composite-symmetric", set2_anchor4_shift=-3).pair_shift[(0, 4)] == -12
    with pytest.raises(achilles.ConfigError, match="set2_anchor4_shift"):
        achilles.get_task("composite-symmetric", set2_anchor4_shift=-20)
