"""What every first-party task promises: registration, rebuild from config, determinism,
disjoint splits, well-formed batches, metrics on column-restricted batches, the CLI."""

import re

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import achilles
from achilles.cli.main import cli
from achilles.contract.loader import get_state
from achilles.plugins.tasks import _common

#: every task the first-party plugin registers: a new task is covered without being listed here
TASKS = sorted(get_state().plugins["tasks"].registered["task"])
PAPER_TASKS = ["composite", "composite-symmetric", "inverse", "mqar", "copy", "cot-lis", "cot-ed"]
# small settings for the tasks whose defaults make long rows; disjointness is checked on
# settings with few possible samples, where a collision would actually happen by chance
SMALL = {"mqar": {"vocab_size": 16, "length": 16, "n_pairs": 2},
         "copy": {"alphabet_size": 3, "min_size": 2, "max_size": 4, "test_max_size": 6},
         "cot-lis": {"value_range": 4, "min_size": 2, "max_size": 4, "test_max_size": 5},
         "cot-ed": {"alphabet_size": 2, "min_size": 2, "max_size": 3, "test_max_size": 4}}
# a smaller vocabulary keeps the (N, S, V) test logits small
LIGHT = {"mqar": {"vocab_size": 512}}


def one_hot(batch, vocab):
    return torch.nn.functional.one_hot(batch.targets, vocab).float()


def restrict(batch):
    """The column-restricted batch achilles.training.evaluation hands to metrics()."""
    cols = batch.mask.any(0)
    return achilles.Batch(batch.tokens[:, cols], batch.targets[:, cols], batch.mask[:, cols], batch.meta)


def test_all_tasks_registered_with_descriptions():
    assert set(PAPER_TASKS) <= set(TASKS)
    for name in TASKS:
        assert achilles.contract.lookup.describe("task", name)


@pytest.mark.parametrize("name", TASKS)
def test_declarations_are_well_formed(name):
    """What cards, zoo ids and probes read from a task: its paper, variant settings, capabilities."""
    task = achilles.get_task(name)
    assert isinstance(task.paper, achilles.Paper) and task.paper.title and task.paper.section
    assert re.fullmatch(r"\d{4}\.\d{4,5}", task.paper.arxiv)
    assert task.paper.as_dict() == {"title": task.paper.title, "arxiv": task.paper.arxiv,
                                    "section": task.paper.section, "short": task.paper.short}
    assert task.paper.short and task.paper.label.startswith(task.paper.short)  # how reports cite it
    assert set(task.variant_settings) <= set(task.config), "variant settings must be settings of the task"
    assert all(isinstance(c, str) and c for c in task.capabilities)
    if "pair_shift" in task.capabilities:  # the contract the anchor-pair probes rely on
        batch = task.generate("test", 32, seed=0)
        rows, key_pos = torch.arange(32), batch.meta["key_pos"] - 1
        pairs = zip(batch.tokens[rows, key_pos + 1].tolist(), batch.tokens[rows, key_pos + 2].tolist())
        shifts = torch.tensor([task.pair_shift[p] for p in pairs])
        assert torch.equal(batch.targets[:, -1], batch.tokens[rows, key_pos] + shifts)


@pytest.mark.parametrize("name", TASKS)
def test_config_rebuilds_the_same_task_and_data(name):
    task = achilles.get_task(name, **SMALL.get(name, {}))
    again = achilles.get_task(name, **task.config)
    assert again.config == task.config and again.seq_len == task.seq_len
    a, b = task.generate("test", 64, seed=3), again.generate("test", 64, seed=3)
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.targets, b.targets)


@pytest.mark.parametrize("name", TASKS)
def test_batches_are_well_formed_and_deterministic(name):
    task = achilles.get_task(name)
    for split in task.splits:
        batch = task.generate(split, 40, seed=7)
        assert batch.tokens.shape == batch.targets.shape == batch.mask.shape == (40, task.seq_len)
        assert batch.tokens.dtype == batch.targets.dtype == torch.int64 and batch.mask.dtype == torch.bool
        assert 0 <= int(batch.tokens.min()) and int(batch.tokens.max()) < task.vocab_size
        assert int(batch.targets[batch.mask].max()) < task.vocab_size
        assert batch.mask.any(1).all(), "every sample is scored somewhere"
        assert all(v.shape[0] == 40 for v in batch.meta.values())
        assert (batch.meta["split"] == task.splits.index(split)).all()
        again = task.generate(split, 40, seed=7)
        assert torch.equal(batch.tokens, again.tokens) and torch.equal(batch.mask, again.mask)
        assert not torch.equal(batch.tokens, task.generate(split, 40, seed=8).tokens)


@pytest.mark.parametrize("name", TASKS)
def test_splits_never_share_a_sample(name):
    task = achilles.get_task(name, **SMALL.get(name, {}))
    rows = {split: {tuple(r) for r in task.generate(split, 3000, seed=0).tokens.tolist()}
            for split in task.splits}
    for i, a in enumerate(task.splits):
        for b in task.splits[i + 1:]:
            assert not rows[a] & rows[b], f"{a} and {b} share samples"
    if name in SMALL:  # the small settings make repeats within a split likely: the check has teeth
        assert len(rows["train"]) < 3000


@pytest.mark.parametrize("name", TASKS)
def test_perfect_logits_score_one_and_restricted_columns_agree(name):
    task = achilles.get_task(name, **LIGHT.get(name, {}))
    batch = task.generate(task.headline_split, 60, seed=1)
    full = task.metrics(one_hot(batch, task.vocab_size), batch)
    narrow = restrict(batch)
    assert task.metrics(one_hot(narrow, task.vocab_size), narrow) == full
    assert task.headline_metric in full
    assert full[task.headline_metric] == 1.0
    assert task.loss(one_hot(batch, task.vocab_size) * 50, batch) < 1e-6


@pytest.mark.parametrize("name", TASKS)
def test_wrong_logits_score_zero(name):
    task = achilles.get_task(name, **LIGHT.get(name, {}))
    batch = task.generate(task.headline_split, 60, seed=2)
    wrong = one_hot(batch, task.vocab_size).roll(1, dims=-1)  # arg-max is target + 1
    scores = task.metrics(wrong, batch)
    assert scores[task.headline_metric] == 0.0


@pytest.mark.parametrize("name", TASKS)
def test_declared_phase_metrics_are_measured(name):
    """A sweep draws one heatmap per phase metric (``achilles.sweep.results_table.phase_metrics``: the
    task's declared ``phase_metrics``, else its headline metric) from the results.csv columns that
    ``collect_results`` writes, ``SPLIT.METRIC`` for each metric the task's ``metrics()`` (and the
    evaluation's loss) gives on the headline split and on test: a declared metric outside those
    columns draws an empty heatmap."""
    from achilles.sweep.results_table import phase_metrics
    from achilles.sweep.sweep_spec import SweepSpec

    task = achilles.get_task(name, **LIGHT.get(name, {}))
    columns = set()
    for split in {task.headline_split, "test"} & set(task.splits):
        batch = task.generate(split, 60, seed=3)
        columns |= {f"{split}.{metric}" for metric in [*task.metrics(one_hot(batch, task.vocab_size), batch), "loss"]}
    declared = phase_metrics(SweepSpec("transformer", name, "quick", {}, [0]))
    assert declared and set(declared) <= columns, f"declared {declared}; measured {sorted(columns)}"


def test_unknown_split_and_bad_n_are_config_errors():
    task = achilles.get_task("composite")
    with pytest.raises(achilles.ConfigError, match="split"):
        task.generate("ood")
    with pytest.raises(achilles.ConfigError, match="setting n"):
        task.generate("train", 0)
    with pytest.raises(achilles.ConfigError, match="seed"):
        task.generate("train", 5, seed=-1)


def test_unknown_setting_names_it():
    with pytest.raises(achilles.ConfigError, match="n_layer"):
        achilles.get_task("inverse", n_layer=3)


# -- helpers -------------------------------------------------------------------------------

def test_balanced_gives_exact_shares_and_reaches_every_label():
    rng = np.random.default_rng(0)
    counts = np.bincount(_common.balanced(rng, 1003, 10), minlength=10)
    assert counts.max() - counts.min() <= 1 and counts.sum() == 1003
    seen = {int(x) for _ in range(200) for x in _common.balanced(rng, 2, 10)}
    assert seen == set(range(10)), "small n must not always pick the first labels"


def test_distinct_ints_rows_are_distinct_and_uniform():
    rng = np.random.default_rng(1)
    draws = _common.distinct_ints(rng, 6, (30000, 4))
    assert all(len(set(r)) == 4 for r in draws.tolist())
    freq = np.bincount(draws[:, 0], minlength=6) / 30000  # every value equally likely in every column
    assert np.abs(freq - 1 / 6).max() < 0.02


def test_draw_excluding_never_hits_the_excluded_values():
    rng = np.random.default_rng(2)
    excluded = np.sort(_common.distinct_ints(rng, 10, (500, 3)) + 20, axis=1)
    values = _common.draw_excluding(rng, 20, 29, excluded, (500, 50))
    assert values.min() >= 20 and values.max() <= 29
    assert not (values[:, :, None] == excluded[:, None, :]).any()
    assert len(np.unique(values)) == 10


# -- CLI -------------------------------------------------------------------------------------

def run(*args):
    return CliRunner().invoke(cli, list(args))


def test_data_show_prints_decoded_samples_with_targets():
    result = run("data", "show", "--task", "composite", "--split", "test", "-n", "3")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert "CompositeTask" in lines[0] and "vocab_size=110" in lines[1]
    assert sum(line.startswith("[") for line in lines) == 3 and "->" in lines[2]


def test_data_show_inverse_ood_with_a_setting():
    result = run("data", "show", "--task", "inverse", "--split", "ood", "--set", "n_layers=3", "-n", "2")
    assert result.exit_code == 0, result.output
    assert "n_layers=3" in result.output and "seq_len=32" in result.output and "query:" in result.output


def test_data_show_unknown_task_lists_close_matches_in_one_line():
    result = run("data", "show", "--task", "compsite")
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert result.output.strip().count("\n") == 0 and "did you mean: composite" in result.output


@pytest.mark.parametrize("args, setting", [
    (["--task", "inverse", "--set", "length=25"], "length"),
    (["--task", "mqar", "--set", "n_pairs=40"], "n_pairs"),
    (["--task", "inverse", "--split", "validation"], "split"),
    (["--task", "inverse", "--set", "n_layers"], "--set"),
])
def test_data_show_impossible_settings_name_the_setting(args, setting):
    result = run("data", "show", *args)
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert f"invalid setting {setting}" in result.output and result.output.strip().count("\n") == 0
