"""`copy`, `cot-lis` and `cot-ed`: the copy is the string, the chains recompute from the input."""

import pytest
import torch
from hypothesis import given, settings, strategies as st

import achilles


def unpad(row, pad=0):
    while row and row[-1] == pad:
        row = row[:-1]
    return row


# -- copy ----------------------------------------------------------------------------------------

@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), split=st.sampled_from(["train", "test"]))
def test_copy_second_half_is_the_first(seed, split):
    task = achilles.get_task("copy", max_size=6, test_max_size=10)
    batch = task.generate(split, 50, seed=seed)
    for row, target, mask, n in zip(batch.tokens.tolist(), batch.targets.tolist(), batch.mask.tolist(),
                                    batch.meta["size"].tolist()):
        assert row[n] == 1 and all(t >= 2 for t in row[:n])
        assert row[n + 1:2 * n + 1] == row[:n] and all(t == 0 for t in row[2 * n + 1:])
        assert [j for j in range(len(row)) if mask[j]] == list(range(n, 2 * n))
        assert [target[j] for j in range(n, 2 * n)] == row[:n]
        assert 1 <= n <= (6 if split == "train" else 10)


def test_copy_lengths_cover_train_range_and_longer_in_test():
    task = achilles.get_task("copy")
    assert task.seq_len == 81 and task.vocab_size == 28
    train, test = task.generate("train", 2000).meta["size"], task.generate("test", 4000).meta["size"]
    assert set(train.tolist()) == set(range(1, 21)) and set(test.tolist()) == set(range(1, 41))
    assert torch.bincount(test).tolist()[1:] == [100] * 40


def test_copy_metrics_exact_match_by_length():
    task = achilles.get_task("copy", max_size=3, test_max_size=5)
    batch = task.generate("test", 100, seed=0)
    logits = torch.nn.functional.one_hot(batch.targets, task.vocab_size).float()
    long_rows = batch.meta["size"] == 5
    col = batch.meta["size"][long_rows] + 1  # the second copied token of each length-5 string
    logits[long_rows.nonzero()[:, 0], col] = logits[long_rows.nonzero()[:, 0], col].roll(1, dims=-1)
    scores = task.metrics(logits, batch)
    assert scores["exact_n5"] == 0.0 and scores["acc_n5"] == pytest.approx(0.8)
    assert scores["exact_n4"] == scores["exact_trained_len"] == 1.0
    assert scores["exact_longer"] == pytest.approx(0.5)


# -- cot-lis ---------------------------------------------------------------------------------------

def lis_chain(xs):
    dp = []
    for i, x in enumerate(xs):
        dp.append(1 + max([dp[j] for j in range(i) if xs[j] < x], default=0))
    return dp


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), split=st.sampled_from(["train", "test"]), values=st.integers(2, 30))
def test_lis_chain_recomputes_from_the_input(seed, split, values):
    task = achilles.get_task("cot-lis", value_range=values, max_size=8, test_max_size=12)
    batch = task.generate(split, 40, seed=seed)
    base = 3
    for row, target, mask, n in zip(batch.tokens.tolist(), batch.targets.tolist(), batch.mask.tolist(),
                                    batch.meta["size"].tolist()):
        row = unpad(row)
        assert len(row) == 2 * n + 3 and row[n] == 1 and row[2 * n + 1] == 2
        xs = [t - base for t in row[:n]]
        assert all(0 <= x < values for x in xs)
        dp = lis_chain(xs)
        assert [t - base for t in row[n + 1:2 * n + 1]] == dp and row[-1] - base == max(dp)
        scored = [target[j] for j in range(len(mask)) if mask[j]]
        assert scored == row[n + 1:]  # the chain, the <ans> marker, the answer


# -- cot-ed ----------------------------------------------------------------------------------------

def edit_table(a, b):
    d = [[i + j if i * j == 0 else 0 for j in range(len(b) + 1)] for i in range(len(a) + 1)]
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            d[i][j] = min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (a[i - 1] != b[j - 1]))
    return d


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), split=st.sampled_from(["train", "test"]), alphabet=st.integers(2, 6))
def test_edit_distance_table_recomputes_from_the_input(seed, split, alphabet):
    task = achilles.get_task("cot-ed", alphabet_size=alphabet, max_size=5, test_max_size=7)
    batch = task.generate(split, 40, seed=seed)
    letters, numbers = 4, 4 + alphabet
    for row, target, mask, size, n, m in zip(batch.tokens.tolist(), batch.targets.tolist(), batch.mask.tolist(),
                                             batch.meta["size"].tolist(), batch.meta["len_a"].tolist(),
                                             batch.meta["len_b"].tolist()):
        row = unpad(row)
        assert max(n, m) == size <= (5 if split == "train" else 7) and min(n, m) >= 1
        assert len(row) == n + m + 3 + n * (m + 1)
        a, b = row[:n], row[n + 1:n + 1 + m]
        assert row[n] == row[n + m + 1] == 1 and all(letters <= t < numbers for t in a + b)
        d = edit_table(a, b)
        expected = []
        for i in range(1, n + 1):
            expected += [numbers + d[i][j] for j in range(1, m + 1)] + [2 if i < n else 3]
        expected.append(numbers + d[n][m])
        assert row[n + m + 2:] == expected
        assert [target[j] for j in range(len(mask)) if mask[j]] == expected


def test_cot_metrics_separate_chain_and_answer():
    for name in ("cot-lis", "cot-ed"):
        task = achilles.get_task(name)
        batch = task.generate("test", 120, seed=1)
        logits = torch.nn.functional.one_hot(batch.targets, task.vocab_size).float()
        answer_pos = torch.roll(batch.tokens == task.ANS, 0, dims=1) & batch.mask
        logits[answer_pos] = logits[answer_pos].roll(1, dims=-1)  # every answer wrong, chains right
        scores = task.metrics(logits, batch)
        assert scores["answer_acc"] == 0.0 and scores["cot_acc"] == 1.0 and scores["cot_exact"] == 1.0
        assert scores["exact"] == 0.0
        top = task.config["test_max_size"]
        assert f"answer_acc_n{top}" in scores and f"cot_acc_n{top}" in scores
        assert "answer_acc_longer" in scores and "answer_acc_trained_len" in scores


def test_cot_sizes_and_lengths():
    lis, ed = achilles.get_task("cot-lis"), achilles.get_task("cot-ed")
    assert lis.seq_len == 2 * 24 + 3 and ed.seq_len == 12 + 12 + 3 + 12 * 13
    assert set(lis.generate("train", 500).meta["size"].tolist()) == set(range(1, 17))
    assert set(ed.generate("test", 500).meta["size"].tolist()) == set(range(1, 13))


@pytest.mark.parametrize("name, kwargs, setting", [
    ("copy", {"min_size": 0}, "min_size"), ("copy", {"max_size": 50, "test_max_size": 40}, "test_max_size"),
    ("cot-lis", {"value_range": 1}, "value_range"), ("cot-ed", {"alphabet_size": 1}, "alphabet_size"),
    ("cot-ed", {"min_size": 5, "max_size": 3}, "max_size"),
])
def test_impossible_settings_name_the_setting(name, kwargs, setting):
    with pytest.raises(achilles.ConfigError, match=f"setting {setting}:"):
        achilles.get_task(name, **kwargs)


def test_too_few_distinct_problems_to_split_is_reported():
    from achilles.plugins.tasks._common import hash_bucket
    import numpy as np

    task = achilles.get_task("cot-lis", value_range=2, min_size=1, max_size=1, test_max_size=1)
    problems = np.array([[x + 3, 1, 4, 2, 4] for x in range(2)])  # the only two: "x <sep> 1 <ans> 1"
    buckets = set(hash_bucket(problems, 2).tolist())
    assert buckets != {0, 1}, "premise: both problems hash to one split"
    (full,) = buckets
    assert len(task.generate(task.splits[full], 50)) == 50
    with pytest.raises(achilles.ConfigError, match="min_size"):
        task.generate(task.splits[1 - full], 50)


def test_run_folders_recorded_with_the_old_size_names_still_load(tmp_path):
    """Problem sizes were ``min_len``/``max_len``/``test_max_len`` (``max_len`` now means only the
    model's longest sequence): a run folder written with those names loads and resumes."""
    from achilles.runs.folder import RunFolder
    from achilles.models.loading import load_run
    from achilles.training.trainer import resume_run, start_run

    sizes = {"min_size": 1, "max_size": 3, "test_max_size": 4}
    trainer = start_run("transformer", "copy", out=tmp_path / "run", profile="quick", task_config=sizes,
                        model_config={"n_layers": 1, "d_model": 8}, epochs=1, train_samples=32, eval_samples=8,
                        batch_size=16, progress=False)
    assert trainer.model.config["max_len"] == trainer.task.seq_len == 9  # 2 * 4 + 1
    run = RunFolder(trainer.run.path)
    run.update_config(task_config={"alphabet_size": 26, "min_len": 1, "max_len": 3, "test_max_len": 4},
                      status="interrupted")
    assert load_run(run.path).task.config == {"alphabet_size": 26, **sizes}
    assert resume_run(run.path, progress=False).fit().status == "finished"
    with pytest.raises(achilles.ConfigError, match="no such setting"):  # new runs use the new names only
        achilles.get_task("copy", max_len=3)
