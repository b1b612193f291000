"""Model cards render from a run folder and parse as Hugging Face model cards."""

from __future__ import annotations

import torch
from huggingface_hub import ModelCard

from achilles.cards import render_card, write_card
from achilles.runs import RunFolder


def make_run(path, profile="quick", status="finished", figures=()):
    run = RunFolder(path)
    sha = run.save_weights({"w": torch.ones(4, 4), "b": torch.zeros(4)})
    run.write_config({
        "achilles_version": "0.1.0", "arch": "mamba2-residual",
        "model": {"n_layers": 2, "d_model": 16, "gamma": 0.5},
        "task": "mqar", "task_config": {"placements": ["last"], "ngrams": ["K2V1"], "length": 64},
        "training": {"profile": profile, "lr": 1e-3, "epochs": 3}, "seed": 0, "status": status,
        "epochs_completed": 3, "weights_sha256": sha,
        "final_metrics": {"train": {"acc": 0.9, "loss": 0.3}, "test": {"acc": 0.5, "by_n": {"8": 0.25}}},
        "headline": {"split": "test", "metric": "acc", "value": 0.5},
    })
    run.append_metrics({"epoch": 1, "loss": 1.0})
    for name in figures:
        (run.path / name).write_bytes(b"\x89PNG\r\n\x1a\n")
    return run.path


def test_card_parses_with_model_index(tmp_path):
    path = write_card(make_run(tmp_path / "run", figures=["loss.png"]), repo_id="org/name")
    assert path == tmp_path / "run" / "README.md"
    card = ModelCard.load(path)
    assert card.data.library_name == "achilles"
    assert "mamba2-residual" in card.data.tags
    assert card.data.model_name == "mamba2-residual.mqar-l2-g0.5-s0-quick"
    results = {(r.dataset_split, r.metric_type): r for r in card.data.eval_results}
    assert results["test", "acc"].metric_value == 0.5
    assert results["test", "by_n/8"].metric_value == 0.25
    assert results["train", "loss"].metric_value == 0.3
    assert results["train", "acc"].dataset_name == "mqar-last-K2V1"
    assert results["train", "acc"].task_type == "mqar"
    text = card.text
    assert "![loss](loss.png)" in text
    assert 'achilles.load("hf-hub:org/name")' in text
    assert "2410.15678" in text  # the paper mqar reproduces


def test_quick_profile_is_never_presented_as_the_paper_result(tmp_path):
    quick = render_card(make_run(tmp_path / "quick", profile="quick"))
    paper = render_card(make_run(tmp_path / "paper", profile="paper"))
    assert "Not the paper's result" in quick and "not-a-paper-result" in quick
    assert "Not the paper's result" not in paper and "not-a-paper-result" not in paper


def test_non_finite_metrics_stay_out_of_the_metadata(tmp_path):
    run = RunFolder(make_run(tmp_path / "run"))
    run.update_config(final_metrics={"test": {"acc": 0.5, "loss": float("nan")}})
    card = ModelCard(render_card(run.path))
    assert [(r.metric_type, r.metric_value) for r in card.data.eval_results] == [("acc", 0.5)]
    assert "| loss | nan |" in card.text


def test_unfinished_run_says_so(tmp_path):
    card = render_card(make_run(tmp_path / "run", status="interrupted"))
    assert "Unfinished run" in card and "`interrupted`" in card
