"""Hugging Face conventions on achilles models, through the real huggingface_hub client (its
PyTorchModelHubMixin) against the local Hub: save_pretrained / from_pretrained / push_to_hub,
timm-style create_model("hf-hub:..."), and load()'s revision, cache_dir and token."""

from __future__ import annotations

import json

import pytest
import torch
from huggingface_hub import HfApi, ModelCard, constants

import achilles
from achilles import HookedModel
from achilles.plugins.archs.mamba2 import Mamba2Model
from achilles.plugins.archs.transformer import TransformerModel
from hub_fixtures import *  # noqa: F401,F403  (fixtures: hub, zoo_registry, toys)
from hub_fixtures import make_run

TINY = dict(n_layers=1, d_model=16, d_state=8, vocab_size=20, max_len=16)
TOKENS = torch.randint(0, 20, (3, 10), generator=torch.Generator().manual_seed(0))
TOY_TOKENS = torch.randint(0, 4, (3, 6), generator=torch.Generator().manual_seed(0))  # the toy task's vocabulary


def tiny_mamba2(seed: int = 0):
    torch.manual_seed(seed)
    return achilles.create_model("mamba2", **TINY).eval()


def same(a, b, tokens=TOKENS) -> bool:
    with torch.no_grad():
        return torch.equal(a(tokens), b(tokens))


def test_save_and_from_pretrained_a_folder(tmp_path):
    model = tiny_mamba2()
    model.save_pretrained(tmp_path / "m")
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["arch"] == "mamba2" and config["d_model"] == 16 and config["d_state"] == 8
    assert ModelCard.load(tmp_path / "m" / "README.md").data.library_name == "achilles"

    for cls in (HookedModel, Mamba2Model):  # the shared base, or the concrete class as HF users do
        loaded = cls.from_pretrained(tmp_path / "m")
        assert type(loaded) is Mamba2Model and not loaded.training and same(loaded, model)
    overridden = HookedModel.from_pretrained(tmp_path / "m", backend="torch")
    assert overridden.config["backend"] == "torch" and same(overridden, model)
    with pytest.raises(achilles.CheckpointError, match="holds a 'mamba2' model .*not a TransformerModel"):
        TransformerModel.from_pretrained(tmp_path / "m")


def test_from_pretrained_a_run_folder_checks_its_sha256(toys, tmp_path):
    run_dir = make_run(tmp_path / "run")
    run = achilles.load(run_dir)
    assert same(HookedModel.from_pretrained(run_dir), run.model, TOY_TOKENS)
    weights = run_dir / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1] + b"\x01")
    with pytest.raises(achilles.CheckpointError, match="does not match its recorded sha256"):
        HookedModel.from_pretrained(run_dir)


def test_folders_that_are_not_achilles_models_say_what_they_hold(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("hi")
    with pytest.raises(achilles.CheckpointError, match="not an achilles model folder .no config.json"):
        HookedModel.from_pretrained(tmp_path / "empty")
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "config.json").write_text(json.dumps({"model_type": "mamba2", "hidden_size": 8}))
    with pytest.raises(achilles.CheckpointError, match="found a transformers config .model_type 'mamba2'"):
        HookedModel.from_pretrained(tmp_path / "hf")
    with pytest.raises(achilles.CheckpointError, match="no model folder at ./nowhere"):
        HookedModel.from_pretrained("./nowhere")


def test_save_pretrained_never_overwrites_a_run(toys, tmp_path):
    run_dir = make_run(tmp_path / "run")
    before = {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()}
    with pytest.raises(achilles.CheckpointError, match="holds a training run"):
        achilles.load(run_dir).model.save_pretrained(run_dir)
    assert {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()} == before


def test_push_to_hub_and_from_pretrained_at_a_revision(hub):
    first, second = tiny_mamba2(0), tiny_mamba2(1)
    first.push_to_hub("test-org/tiny")
    commit = HfApi().repo_info("test-org/tiny").sha
    second.push_to_hub("test-org/tiny")
    assert same(HookedModel.from_pretrained("test-org/tiny"), second)
    assert same(HookedModel.from_pretrained("test-org/tiny", revision=commit), first)
    assert same(HookedModel.from_pretrained(f"hf-hub:test-org/tiny@{commit}"), first)
    card = ModelCard.load("test-org/tiny")
    assert card.data.library_name == "achilles" and {"mamba2", "state-space-model"} <= set(card.data.tags)

    # timm-style: with the weights, or the architecture alone (fresh weights, same settings)
    assert same(achilles.create_model(f"hf-hub:test-org/tiny@{commit}", pretrained=True), first)
    fresh = achilles.create_model("hf-hub:test-org/tiny")
    assert type(fresh) is Mamba2Model and fresh.config == second.config and not same(fresh, second)


def test_from_pretrained_offline_and_errors_are_one_line(hub, monkeypatch):
    tiny_mamba2().push_to_hub("test-org/tiny")
    online = HookedModel.from_pretrained("test-org/tiny")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    hub.hub.requests.clear()
    assert same(HookedModel.from_pretrained("test-org/tiny"), online)
    assert hub.hub.requests == []
    with pytest.raises(achilles.CheckpointError, match="not in the local Hugging Face cache"):
        HookedModel.from_pretrained("test-org/never-pushed")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    with pytest.raises(achilles.CheckpointError, match="no repository 'test-org/nope'"):
        HookedModel.from_pretrained("test-org/nope")
    with pytest.raises(achilles.CheckpointError, match="invalid Hub repo id"):
        HookedModel.from_pretrained("not a repo")


def test_a_pushed_run_loads_the_hugging_face_way_and_is_verified(hub, toys, tmp_path):
    from click.testing import CliRunner

    from achilles.cli.main import cli

    run_dir = make_run(tmp_path / "run")
    assert CliRunner().invoke(cli, ["push", str(run_dir), "--repo-id", "test-org/run"]).exit_code == 0
    assert same(HookedModel.from_pretrained("test-org/run"), achilles.load(run_dir).model, TOY_TOKENS)
    hub.hub.replace_file("test-org/run", "model.safetensors", b"\x00" * 64)
    with pytest.raises(achilles.CheckpointError, match="does not match its recorded sha256"):
        HookedModel.from_pretrained("test-org/run")


def test_load_takes_revision_cache_dir_and_token(hub, toys, tmp_path, monkeypatch):
    from click.testing import CliRunner

    from achilles.cli.main import cli

    a, b = make_run(tmp_path / "a", seed=0), make_run(tmp_path / "b", seed=1)
    invoke = CliRunner().invoke
    assert invoke(cli, ["push", str(a), "--repo-id", "test-org/private", "--private"]).exit_code == 0
    commit = hub.hub.repos["test-org/private"].branches["main"]
    assert invoke(cli, ["push", str(b), "--repo-id", "test-org/private"]).exit_code == 0
    monkeypatch.delenv("HF_TOKEN")  # a private repo: visible only with the token passed explicitly
    with pytest.raises(achilles.CheckpointError, match="no repository"):
        achilles.load("hf-hub:test-org/private", cache_dir=tmp_path / "cache")
    loaded = achilles.load("hf-hub:test-org/private", revision=commit, cache_dir=tmp_path / "cache",
                           token="hf_local_test_token")
    assert loaded.config["seed"] == 0 and loaded.path.is_relative_to(tmp_path / "cache")
    with pytest.raises(achilles.CheckpointError, match="give one"):
        achilles.load(f"hf-hub:test-org/private@{commit}", revision="main", token="hf_local_test_token")
    with pytest.raises(achilles.CheckpointError, match="applies to Hub ids"):
        achilles.load(a, revision="main")
