"""Model cards as the Hub renders them: evaluation-only model-index, true tags, declared papers,
no sentence that contradicts another, probes listed."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch
from huggingface_hub import ModelCard

import achilles
from achilles import hookimpl
from achilles.zoo.card import render_card, write_card
from achilles.runs.folder import RunFolder
from achilles.runs.ownership import claim

import toy_plugin


class PaperTask(toy_plugin.CountTask):
    """The toy task with the declarations a first-party task makes."""

    paper = {"title": "A Paper About Counting", "arxiv": "2401.00001"}
    variant_settings = ("length",)


class CardPlugin:
    @hookimpl
    def register_tasks(self, register):
        register("counting", PaperTask)
        register("plain-count", toy_plugin.CountTask)

    @hookimpl
    def register_architectures(self, register):
        register("ssm-ish", toy_plugin.TwoLayerToy, tags=["state-space-model"])
        register("gru-ish", toy_plugin.TwoLayerToy)  # a plugin arch that declares no family


@pytest.fixture(autouse=True)
def card_plugin():
    achilles.register_plugin(CardPlugin(), name="card-test")


def make_run(path, profile="quick", status="finished", figures=(), arch="ssm-ish", task="counting", probes=None):
    run = RunFolder(path)
    sha = run.save_weights({"w": torch.ones(4, 4), "b": torch.zeros(4)})
    run.write_config({
        "achilles_version": "0.1.0", "arch": arch, "model": {"n_layers": 2, "d_model": 16, "gamma": 0.5},
        "task": task, "task_config": {"vocab": 4, "length": 6},
        "training": {"profile": profile, "epochs": 6, "train_samples": 80000, "batch_size": 1024,
                     "lr_peak": 1e-3},
        "seed": 0, "status": status, "epochs_completed": 3, "weights_sha256": sha,
        "final_metrics": {"train": {"acc": 0.9, "loss": 0.3},
                          "test": {"acc": 0.123456789, "loss": 1.5, "by_n": {"8": 0.25}},
                          "ood": {"acc": 0.0512345, "loss": 2.5},
                          "test_shuffle": {"acc": 0.75}},
        "headline": {"split": "test", "metric": "acc", "value": 0.123456789},
    })
    run.append_metrics({"epoch": 1, "loss": 1.0})
    for name in figures:
        claim(run.path, name)  # a figure of the run's own (listed as achilles lists what it writes)
        (run.path / name).write_bytes(b"\x89PNG\r\n\x1a\n")
    for probe, files in (probes or {}).items():
        for name in files:
            (run.path / "probes" / probe).mkdir(parents=True, exist_ok=True)
            (run.path / "probes" / probe / name).write_bytes(b"{}")
    return run.path


def test_model_index_lists_evaluation_splits_once_rounded_without_loss(tmp_path):
    path = write_card(make_run(tmp_path / "run", figures=["loss.png"]), repo_id="org/name")
    card = ModelCard.load(path)
    assert card.data.library_name == "achilles" and card.data.license == "mit"
    assert card.data.model_name == "ssm-ish.counting-l2-g0.5-s0-quick"
    rows = [(r.dataset_split, r.metric_type, r.metric_value) for r in card.data.eval_results]
    assert sorted(rows) == sorted([("test", "acc", 0.1235), ("test", "by_n/8", 0.25), ("ood", "acc", 0.0512),
                                   ("test_shuffle", "acc", 0.75)])
    assert {r.dataset_name for r in card.data.eval_results} == {"counting-6"}  # the declared variant
    text = card.text
    assert "| loss | 0.3 | 1.5 | 2.5 |  |" in text  # the table keeps what the metadata leaves out
    assert "![loss](loss.png)" in text
    assert 'achilles.load("hf-hub:org/name")' in text and 'HookedModel.from_pretrained("org/name")' in text


def test_tags_are_what_the_architecture_declares(tmp_path):
    ssm = ModelCard(render_card(make_run(tmp_path / "ssm", arch="ssm-ish")))
    gru = ModelCard(render_card(make_run(tmp_path / "gru", arch="gru-ish")))
    assert "state-space-model" in ssm.data.tags
    assert "state-space-model" not in gru.data.tags and "gru-ish" in gru.data.tags
    first_party = ModelCard(render_card(make_run(tmp_path / "m", arch="mamba2-residual")))
    assert {"state-space-model", "mamba2", "mamba2-residual"} <= set(first_party.data.tags)
    assert "state-space-model" not in ModelCard(render_card(make_run(tmp_path / "t", arch="transformer"))).data.tags


def test_papers_come_from_the_task_declaration(tmp_path):
    declared = render_card(make_run(tmp_path / "declared", task="counting", profile="paper"))
    assert "arxiv:2401.00001" in ModelCard(declared).data.tags
    assert "[arXiv:2401.00001](https://arxiv.org/abs/2401.00001)" in declared
    assert "follow *A Paper About Counting*" in declared
    undeclared = render_card(make_run(tmp_path / "plain", task="plain-count"))
    assert "arxiv" not in undeclared.lower() and "does not declare a paper" in undeclared


def test_quick_profile_never_claims_a_reproduction(tmp_path):
    quick = render_card(make_run(tmp_path / "quick", profile="quick"))
    paper = render_card(make_run(tmp_path / "paper", profile="paper"))
    assert "Not the paper's result" in quick and "not-a-paper-result" in quick
    assert "reproduc" not in quick.lower()
    assert "6 epochs, 80,000 training samples, batch 1024, peak lr 0.001" in quick  # the budget
    assert "Not the paper's result" not in paper and "not-a-paper-result" not in paper


def test_probe_outputs_are_listed(tmp_path):
    run = make_run(tmp_path / "run", probes={"blocking": ["blocking.json", "blocking.png"]})
    card = render_card(run)
    assert "[`blocking.json`](probes/blocking/blocking.json)" in card
    assert "[`blocking.png`](probes/blocking/blocking.png)" in card
    assert "No probe was run" in render_card(make_run(tmp_path / "bare"))


def test_non_finite_metrics_stay_out_of_the_metadata(tmp_path):
    run = RunFolder(make_run(tmp_path / "run"))
    run.update_config(final_metrics={"test": {"acc": 0.5, "exact": float("nan")}})
    card = ModelCard(render_card(run.path))
    assert [(r.metric_type, r.metric_value) for r in card.data.eval_results] == [("acc", 0.5)]
    assert "| exact | nan |" in card.text


def test_unfinished_run_says_so(tmp_path):
    card = render_card(make_run(tmp_path / "run", status="interrupted"))
    assert "Unfinished run" in card and "`interrupted`" in card


def test_cards_package_imports_nothing_of_achilles():
    """core -> cards only: the formatter never reaches back into core (no import cycle)."""
    import achilles.cards

    for source in Path(achilles.cards.__file__).parent.glob("*.py"):
        tree = ast.parse(source.read_text())
        names = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
        names += [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and not n.level]
        assert not [n for n in names if n.split(".")[0] == "achilles"], source.name


# -- the sections a Hub user expects, each number once, the citation ------------------------
SECTIONS = ("## Intended use", "## Model", "## Training data", "## Training procedure", "## Evaluation",
            "## Limitations", "## How to load", "## Citation")


class HeadlineTask(toy_plugin.CountTask):
    """A paperless task whose declared headline metric is not the first one it reports."""

    headline_metric = "exact"
    headline_split = "ood"


@pytest.fixture
def headline_plugin():
    class Plugin:
        @hookimpl
        def register_tasks(self, register):
            register("headline-count", HeadlineTask)

    achilles.register_plugin(Plugin(), name="card-headline-test")


def test_every_section_is_present_and_the_hub_parses_the_card(tmp_path):
    for task in ("counting", "plain-count"):
        text = render_card(make_run(tmp_path / task, task=task), zoo_id="some.zoo-id")
        card = ModelCard(text)
        assert card.data.model_name == "some.zoo-id" and card.data.eval_results
        positions = [text.index(section + "\n") for section in SECTIONS]
        assert positions == sorted(positions), task  # in the order a reader looks for them
        assert "not a language model" in text
        assert "80,000 training samples, drawn with data seed 0" in text  # training data: counts and seed
        assert "`achilles eval some.zoo-id` with no flags evaluates the same samples" in text


def test_training_data_and_evaluation_say_samples_and_seed(tmp_path):
    run = RunFolder(make_run(tmp_path / "run"))
    config = run.read_config()
    run.update_config(training={**config["training"], "eval_samples": 500, "data_seed": 7, "precision": "bf16"})
    text = render_card(run.path)
    assert "drawn with data seed 7" in text and "`test` 500 samples" in text and "`ood` 500 samples" in text
    assert "the `train` row scores the first 500 training samples" in text
    assert "`test` on 500 samples, `ood` on 500 samples" in text
    assert "bf16 precision" in text  # the training procedure names the precision the run records
    assert "standard error of about 0.015" in text  # sqrt(0.1235 * 0.8765 / 500)


def test_the_model_index_lists_each_number_once_headline_first(tmp_path, headline_plugin):
    run = RunFolder(make_run(tmp_path / "run", task="headline-count"))
    final = {"test": {"acc": 0.6, "acc_test": 0.6, "a": 0.5, "b": 1.0, "c": 1.0},
             "ood": {"acc": 0.3, "exact": 0.2, "exact_again": 0.2}}
    run.update_config(final_metrics=final, headline={"split": "ood", "metric": "exact", "value": 0.2})
    run.append_metrics({"epoch": 2, "loss": 0.5, "metrics": {
        "test": {"acc": 0.4, "acc_test": 0.4, "a": 0.3, "b": 0.5, "c": 0.7},  # b and c only meet at the end
        "ood": {"acc": 0.1, "exact": 0.05, "exact_again": 0.05}}})
    card = ModelCard(render_card(run.path))
    rows = [(r.dataset_split, r.metric_type) for r in card.data.eval_results]
    assert rows[0] == ("ood", "exact")  # the headline split, the task's declared headline metric first
    assert rows == [("ood", "exact"), ("ood", "acc"), ("test", "acc"), ("test", "a"), ("test", "b"), ("test", "c")]
    values = [(r.dataset_split, r.metric_value) for r in card.data.eval_results]
    assert len(values) == len(set(values)) + 1  # b and c: two measurements that meet at 1.0, both kept
    assert "`acc_test` (= `acc`)" in card.text and "`exact_again` (= `exact`)" in card.text


def test_first_party_composite_card_lists_its_headline_once(tmp_path):
    run = RunFolder(make_run(tmp_path / "run", arch="mamba2", task="composite"))
    run.update_config(task_config={}, final_metrics={
        "test": {"acc": 0.99, "acc_pair_43": 0.916, "acc_43_composite": 0.916, "acc_43_symmetric": 0.0}},
        headline={"split": "test", "metric": "acc_43_composite", "value": 0.916})
    text = render_card(run.path)
    card = ModelCard(text)
    assert [r.metric_type for r in card.data.eval_results] == ["acc_43_composite", "acc_43_symmetric", "acc"]
    assert "@misc{chen2025achilles," in text and "archivePrefix = {arXiv}" in text and "eprint        = {2509.17514}" in text
    assert "Chen, Tianyi and Lin, Pengxiao" in text


def test_a_paperless_task_gets_no_paper_text(tmp_path):
    text = render_card(make_run(tmp_path / "plain", task="plain-count", profile="quick"))
    assert "paper's" not in text.lower() and "not-a-paper-result" not in text
    assert "```bibtex" not in text and "does not declare a paper" in text
    assert "a small budget" in text  # the quick profile is still said, without a paper to compare with


def test_a_paper_without_bibtex_is_cited_from_its_arxiv_id(tmp_path):
    text = render_card(make_run(tmp_path / "run", task="counting"))
    block = text.split("```bibtex\n", 1)[1].split("```", 1)[0]
    assert "@misc{arxiv2401_00001," in block and "eprint = {2401.00001}" in block
    assert "archivePrefix = {arXiv}" in block and "title = {A Paper About Counting}" in block


def test_one_paper_record(tmp_path):
    """``achilles.Paper`` is the one paper class: the card gathers a task's declared papers (a dict
    here, with no section) into it, and no other module of achilles defines a ``Paper``."""
    from achilles.zoo.card import card_data

    papers = card_data(make_run(tmp_path / "run", task="counting")).papers
    assert papers == [achilles.Paper("A Paper About Counting", "2401.00001")]
    root = Path(__file__).resolve().parent.parent
    defined = [source.relative_to(root).as_posix() for folder in ("core", "plugins", "cards")
               for source in sorted((root / folder).rglob("*.py"))
               if any(isinstance(node, ast.ClassDef) and node.name == "Paper" for node in ast.walk(ast.parse(source.read_text())))]
    assert defined == ["core/contract/task.py"]
