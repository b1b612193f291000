"""`mqar`: values follow their keys, placements, KkVv n-grams, noise, power-law queries."""

import pytest
import torch
from hypothesis import given, settings, strategies as st

import achilles

PAD, S1, S2 = 0, 1, 2


def blocks_of(row, start, k, v, delimiters):
    """(keys, values) of the block at ``start``."""
    if delimiters:
        assert row[start] == S1 and row[start + k + 1] == S2 and row[start + k + v + 2] == S1
        return tuple(row[start + 1:start + 1 + k]), tuple(row[start + k + 2:start + k + 2 + v])
    return tuple(row[start:start + k]), tuple(row[start + k:start + k + v])


def context_pairs(row, half, k, v, delimiters, vocab):
    """The key -> value map of the first half, read off the tokens alone."""
    pairs, j = {}, 0
    block = k + v + (3 if delimiters else 0)
    while j + block <= half:
        first = row[j + 1] if delimiters else row[j]
        is_block = (row[j] == S1 and 3 <= first < vocab // 2) if delimiters else (3 <= row[j] < vocab // 2)
        if is_block and (not delimiters or row[j + k + 1] == S2):
            keys, values = blocks_of(row, j, k, v, delimiters)
            if all(3 <= t < vocab // 2 for t in keys) and all(t >= vocab // 2 for t in values):
                assert keys not in pairs
                pairs[keys] = values
                j += block
                continue
        j += 1
    return pairs


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), placement=st.sampled_from(["standard", "last", "shuffle"]),
       k=st.integers(1, 2), v=st.integers(1, 3), n_pairs=st.integers(1, 5), split=st.sampled_from(["train", "test"]))
def test_values_follow_their_keys(seed, placement, k, v, n_pairs, split):
    ngram = f"K{k}V{v}"
    task = achilles.get_task("mqar", vocab_size=512, length=96, n_pairs=n_pairs, placements=placement,
                             test_placements=placement, ngrams=ngram)
    delimiters = task.config["delimiters"]
    assert delimiters == ((k, v) != (1, 1))
    batch = task.generate(split, 30, seed=seed)
    half = 48
    for row, target, mask in zip(batch.tokens.tolist(), batch.targets.tolist(), batch.mask.tolist()):
        pairs = context_pairs(row, half, k, v, delimiters, 512)
        assert len(pairs) == n_pairs
        assert len({t for keys in pairs for t in keys}) == n_pairs * k  # key tokens distinct
        assert len({t for vals in pairs.values() for t in vals}) == n_pairs * v
        scored = [j for j in range(96) if mask[j]]
        assert len(scored) == n_pairs * v and all(j >= half for j in scored)
        for q in range(n_pairs):  # each query: the key, then targets equal to that key's value
            first = scored[q * v]
            key_end = first - 1 if delimiters else first  # index of the last key token
            keys = tuple(row[key_end - k + 1:key_end + 1])
            assert keys in pairs
            assert tuple(target[j] for j in scored[q * v:(q + 1) * v]) == pairs[keys]
            assert [row[j + 1] for j in scored[q * v:(q + 1) * v]] == list(pairs[keys])  # teacher forcing


def positions_of_keys(row, half, vocab):
    return [j for j in range(half) if 3 <= row[j] < vocab // 2]


def test_placements_put_the_context_where_they_say():
    common = dict(vocab_size=1024, length=64, n_pairs=4)
    for placement, check in [
        ("standard", lambda pos: pos == [0, 2, 4, 6]),
        ("last", lambda pos: pos == [24, 26, 28, 30]),
    ]:
        task = achilles.get_task("mqar", placements=placement, **common)
        for row in task.generate("train", 20, seed=1).tokens.tolist():
            assert check(positions_of_keys(row, 32, 1024)), (placement, row)
    task = achilles.get_task("mqar", placements="shuffle", **common)
    starts = []
    for row in task.generate("train", 400, seed=1).tokens.tolist():
        pos = positions_of_keys(row, 32, 1024)
        assert len(pos) == 4 and all(b - a >= 2 for a, b in zip(pos, pos[1:])) and pos[-1] <= 30
        starts += pos
    assert min(starts) == 0 and max(starts) == 30 and len(set(starts)) > 25  # spread over the half


def test_test_split_mixes_placements_in_equal_shares_and_reports_each():
    task = achilles.get_task("mqar", vocab_size=512)
    batch = task.generate("test", 300, seed=0)
    assert torch.bincount(batch.meta["placement"], minlength=3).tolist() == [100, 100, 100]
    logits = torch.nn.functional.one_hot(batch.targets, task.vocab_size).float()
    shuffle = batch.meta["placement"] == 2
    logits[shuffle] = logits[shuffle].roll(1, dims=-1)
    scores = task.metrics(logits, batch)
    assert scores["acc_standard"] == scores["acc_last"] == 1.0 and scores["acc_shuffle"] == 0.0
    assert scores["acc"] == pytest.approx(2 / 3) and scores["query_acc"] == pytest.approx(2 / 3)
    assert task.generate("train", 50).meta["placement"].eq(0).all()


def test_ngram_probe_train_k1v1_k1v2_test_k2v2():
    task = achilles.get_task("mqar", vocab_size=512, length=128, ngrams="K1V1,K1V2", test_ngrams=["K2V2"])
    train = task.generate("train", 100)
    assert sorted(set(zip(train.meta["key_len"].tolist(), train.meta["value_len"].tolist()))) == [(1, 1), (1, 2)]
    test = task.generate("test", 90)
    assert set(test.meta["key_len"].tolist()) == {2} and set(test.meta["value_len"].tolist()) == {2}
    assert (test.tokens == S1).any() and (train.tokens == S2).any()  # one delimited format everywhere
    logits = torch.nn.functional.one_hot(test.targets, task.vocab_size).float()
    first_value = test.mask & ~torch.roll(test.mask, 1, dims=1)  # the first value token of each query
    logits[first_value] = logits[first_value].roll(1, dims=-1)
    scores = task.metrics(logits, test)
    assert scores["acc_K2V2"] == pytest.approx(0.5) and scores["query_acc"] == 0.0
    assert {"acc_standard", "acc_last", "acc_shuffle"} <= set(scores)
    mixed = achilles.get_task("mqar", vocab_size=512, length=128, ngrams="K1V1", test_ngrams="K1V1,K2V2").generate("test", 60)
    logits = torch.nn.functional.one_hot(mixed.targets, task.vocab_size).float()
    combos = {k for k in task.metrics(logits, mixed) if k.count("_") == 2 and not k.endswith("_moved")}
    assert combos == {f"acc_{p}_{g}" for p in ("standard", "last", "shuffle") for g in ("K1V1", "K2V2")}


def test_shuffle_moved_scores_only_shuffled_samples_away_from_the_trained_placement():
    task = achilles.get_task("mqar", vocab_size=64, length=16, n_pairs=2)
    batch = task.generate("test", 3000, seed=0)
    shuffled = batch.meta["placement"] == 2
    moved = batch.meta["moved"] == 1
    # about a third of shuffled samples put a block where the standard placement puts it
    assert 0.55 < moved[shuffled].float().mean().item() < 0.8
    assert bool(moved[batch.meta["placement"] == 1].all()) and not bool(moved[batch.meta["placement"] == 0].any())
    logits = torch.nn.functional.one_hot(batch.targets, task.vocab_size).float()
    wrong = torch.zeros_like(batch.mask)
    wrong[shuffled & ~moved] = batch.mask[shuffled & ~moved]  # wrong exactly on the overlapping shuffles
    logits[wrong] = logits[wrong].roll(1, dims=-1)
    scores = task.metrics(logits, batch)
    assert scores["acc_shuffle_moved"] == 1.0 and scores["acc_shuffle"] < 0.8


def test_noise_fills_the_gaps_without_repeating_the_sample_tokens():
    quiet = achilles.get_task("mqar", vocab_size=64, length=64, n_pairs=8)
    noisy = achilles.get_task("mqar", vocab_size=64, length=64, n_pairs=8, noise=True)
    assert (quiet.generate("train", 50).tokens == PAD).sum() > 0
    batch = noisy.generate("train", 200, seed=3)
    assert not (batch.tokens == PAD).any()
    for row in batch.tokens.tolist():
        own = row[:16]  # standard K1V1: the 8 pairs are the first 16 tokens
        rest = row[16:32]
        assert not set(own) & set(rest), "noise repeats a key or value of the sample"


def test_query_slots_follow_the_power_law_front_loading():
    task = achilles.get_task("mqar", vocab_size=4096, length=256, n_pairs=4)
    first = task.generate("train", 2000, seed=0).mask.float().argmax(1) - 128
    slots = first // 2
    assert (slots < 8).float().mean() > 0.5  # uniform slots would put ~13% there (4 of 64 slots)


@pytest.mark.parametrize("kwargs, setting", [
    ({"length": 64, "n_pairs": 17}, "n_pairs"),
    ({"length": 64, "n_pairs": 4, "ngrams": "K4V8"}, "n_pairs"),
    ({"n_pairs": 4, "n_queries": 5}, "n_queries"),
    ({"vocab_size": 8, "n_pairs": 4}, "vocab_size"),
    ({"placements": "middle"}, "placements"),
    ({"ngrams": "K0V1"}, "ngrams"),
    ({"noise": "yes"}, "noise"),
    ({"power_a": 0}, "power_a"),
])
def test_impossible_settings_name_the_setting(kwargs, setting):
    with pytest.raises(achilles.ConfigError, match=f"setting {setting}:"):
        achilles.get_task("mqar", **kwargs)


def test_paper_grid_corners_fit():
    for length, pairs in [(64, 4), (128, 16), (256, 64), (512, 128)]:
        task = achilles.get_task("mqar", length=length, n_pairs=pairs)
        batch = task.generate("test", 6)
        assert batch.tokens.shape == (6, length) and int(batch.mask.sum()) == 6 * pairs


def test_fewer_queries_than_pairs():
    task = achilles.get_task("mqar", n_pairs=8, n_queries=3)
    batch = task.generate("train", 20)
    assert (batch.mask.sum(1) == 3).all()
