"""`inverse` against docs/tasks.md and appendix C.2 of Achilles' Heel."""

import itertools

import pytest
import torch
from hypothesis import given, settings, strategies as st

import achilles


@pytest.mark.parametrize("n_layers, length", [(1, 26), (2, 29), (3, 32), (5, 38)])
def test_length_grows_with_depth_as_in_the_paper(n_layers, length):
    task = achilles.get_task("inverse", n_layers=n_layers)
    assert task.seq_len == length == 5 * (3 + 1) + 3 * n_layers + 3
    assert task.generate("train", 4).tokens.shape == (4, length)


def test_model_settings_and_defaults():
    task = achilles.get_task("inverse")
    assert type(task).model_settings == ("n_layers",)
    assert task.config == {"n_layers": 2, "conv_width": 4, "length": None}
    assert task.split_sizes() == {"train": 80_000, "test": 10_000, "ood": 10_000}
    assert task.vocab_size == 201 and task.splits == ("train", "test", "ood")


def test_padding_follows_conv_width_and_explicit_length_adds_filler():
    assert achilles.get_task("inverse", n_layers=2, conv_width=2).seq_len == 20 + 2 + 3
    task = achilles.get_task("inverse", length=35)
    assert task.seq_len == 35 and task.generate("test", 3).tokens.shape == (3, 35)


@pytest.mark.parametrize("settings_, setting", [
    ({"length": 28}, "length"), ({"n_layers": 3, "length": 29}, "length"),
    ({"n_layers": 0}, "n_layers"), ({"conv_width": 0}, "conv_width"), ({"n_layers": "2"}, "n_layers"),
])
def test_impossible_settings_name_the_setting(settings_, setting):
    with pytest.raises(achilles.ConfigError, match=f"setting {setting}:"):
        achilles.get_task("inverse", **settings_)


def check_sample(row, answer, split, n_layers, conv_width, length):
    keys = [tuple(row[4 * k: 4 * k + 3]) for k in range(5)]
    separators = [row[4 * k + 3] for k in range(5)]
    filler = row[20:-3]
    query = tuple(row[-3:])
    generating_set = set(keys[0])
    assert len(generating_set) == 3
    assert len(set(keys)) == 5 and all(set(k) == generating_set for k in keys)  # 5 distinct perms
    assert len(filler) == length - 23 >= (conv_width - 1) * n_layers
    assert not generating_set & set(separators + filler)
    low, high = (101, 200) if split == "ood" else (20, 100)
    assert all(low <= t <= high for t in row)
    # the query is the reverse of exactly one key sequence: the labelled one
    assert [k for k in range(5) if keys[k] == query[::-1]] == [answer]
    residues = {v % 3 for v in generating_set}
    if split == "train":
        assert len(residues) > 1
    elif split == "test":
        assert len(residues) == 1


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), split=st.sampled_from(["train", "test", "ood"]),
       n_layers=st.integers(1, 4), conv_width=st.integers(1, 5), extra=st.integers(0, 3))
def test_every_sample_is_a_valid_inverse_matching_problem(seed, split, n_layers, conv_width, extra):
    length = 23 + (conv_width - 1) * n_layers + extra
    task = achilles.get_task("inverse", n_layers=n_layers, conv_width=conv_width, length=length)
    batch = task.generate(split, 60, seed=seed)
    assert batch.mask[:, -1].all() and batch.mask.sum() == 60
    assert torch.equal(batch.targets[:, -1], batch.meta["answer_index"])
    for row, answer, forward in zip(batch.tokens.tolist(), batch.meta["answer_index"].tolist(),
                                    batch.meta["forward_index"].tolist()):
        check_sample(row, answer, split, n_layers, conv_width, length)
        keys = [tuple(row[4 * k: 4 * k + 3]) for k in range(5)]
        expected = [k for k in range(5) if keys[k] == tuple(row[-3:])]
        assert expected == ([forward] if forward >= 0 else [])


def test_no_train_generating_set_is_all_one_residue_at_scale():
    tokens = achilles.get_task("inverse").generate("train", 20_000, seed=11).tokens[:, :3]
    residues = tokens % 3
    assert not ((residues == residues[:, :1]).all(1)).any()
    test = achilles.get_task("inverse").generate("test", 2000, seed=11).tokens[:, :3] % 3
    assert (test == test[:, :1]).all()
    assert set(test[:, 0].tolist()) == {0, 1, 2}


def test_answer_index_and_permutations_are_spread():
    batch = achilles.get_task("inverse").generate("train", 5000, seed=4)
    counts = torch.bincount(batch.meta["answer_index"], minlength=5).float() / 5000
    assert (counts - 0.2).abs().max() < 0.03
    perms = {tuple(sorted(range(3), key=lambda j: row[j])) for row in batch.tokens[:200, :3].tolist()}
    assert len(perms) == len(list(itertools.permutations(range(3))))


def test_metrics_per_split_on_a_joined_batch():
    task = achilles.get_task("inverse")
    batches = [task.generate(split, 50, seed=0) for split in task.splits]
    joined = achilles.Batch.cat(batches)
    logits = torch.nn.functional.one_hot(joined.targets, task.vocab_size).float()
    logits[:50, -1] = logits[:50, -1].roll(1, dims=-1)  # every train sample wrong
    scores = task.metrics(logits, joined)
    assert scores["acc_train"] == 0.0 and scores["acc_test"] == 1.0 and scores["acc_ood"] == 1.0
    assert scores["acc"] == pytest.approx(2 / 3)
    assert {f"acc_index_{k}" for k in range(5)} <= set(scores)


def test_forward_match_rate_catches_a_model_that_matches_without_reversing():
    task = achilles.get_task("inverse")
    batch = task.generate("test", 500, seed=2)
    forward = batch.meta["forward_index"]
    guess = torch.where(forward >= 0, forward, batch.meta["answer_index"])
    logits = torch.zeros(500, task.seq_len, task.vocab_size)
    logits[torch.arange(500), -1, guess] = 1.0
    scores = task.metrics(logits, batch)
    assert scores["forward_match_rate"] == 1.0 and scores["acc"] < 0.5
