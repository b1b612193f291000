"""The zoo end to end through the real huggingface_hub client over real HTTP (a local Hub):
push -> pull -> load, the index, plugin zoos, offline use, and every failure as one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from huggingface_hub import ModelCard

import achilles
from achilles import hookimpl
from achilles.cli.main import cli
from achilles.runs.folder import RunFolder
from achilles.zoo.index import list_zoo
from hub_fixtures import *  # noqa: F401,F403  (fixtures: hub, zoo_registry, toys)
from hub_fixtures import TOY_TASK, make_run

REPO = "test-org/toy-run"


def achilles_cli(*args: str):
    return CliRunner().invoke(cli, [str(a) for a in args])


def assert_one_line_error(result, *needles: str) -> str:
    """A user error: non-zero exit, one line on stderr naming the problem, no traceback."""
    assert result.exit_code != 0, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert "Traceback" not in result.output
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def outputs(model) -> torch.Tensor:
    tokens = achilles.get_task(TOY_TASK).generate("test", n=8, seed=3).tokens
    with torch.no_grad():
        return model(tokens)


def push(run_dir: Path, *extra: str, repo: str = REPO):
    result = achilles_cli("push", run_dir, "--repo-id", repo, *extra)
    assert result.exit_code == 0, result.output
    return result


def cache_files(hub_cache: Path) -> list[Path]:
    return [p for p in hub_cache.rglob("*") if p.is_file() or p.is_symlink()]


# -- the happy path ---------------------------------------------------------------------
def test_push_pull_load_gives_bit_identical_outputs(hub, zoo_registry, toys, tmp_path):
    run_dir = make_run(tmp_path / "run")
    original = achilles.load(run_dir)

    result = push(run_dir)
    commit = hub.hub.repos[REPO].branches["main"]
    assert result.stdout.strip() == f"{hub.endpoint}/{REPO}/commit/{commit}"
    published = hub.hub.repos[REPO].commits[commit]
    assert set(published) == {".gitattributes", "config.json", "run.json", "model.safetensors", "init.safetensors",
                              "metrics.jsonl", "README.md", "loss.png"}  # never checkpoint/
    model_config = json.loads(published["config.json"])  # the model's settings at the top level
    assert model_config["arch"] == toys[0] and model_config["d_model"] == original.model.config["d_model"]
    card = ModelCard(published["README.md"].decode())
    assert card.data.library_name == "achilles" and card.data.eval_results
    assert f'achilles.load("hf-hub:{REPO}")' in card.text

    pulled = achilles_cli("pull", f"hf-hub:{REPO}")
    assert pulled.exit_code == 0, pulled.output
    local = Path(pulled.stdout.strip())
    assert local.is_relative_to(tmp_path / "hf-home" / "hub") and (local / "model.safetensors").is_file()
    assert "verified" in pulled.stderr and TOY_TASK in pulled.stderr

    loaded = achilles.load(f"hf-hub:{REPO}@main")
    assert loaded.path == local and loaded.config == original.config
    assert not loaded.model.training
    assert torch.equal(outputs(loaded.model), outputs(original.model))


def test_first_party_mamba2_round_trip(hub, tmp_path):
    run_dir = make_run(tmp_path / "run", arch="mamba2", task="inverse",
                       model_config=dict(n_layers=1, d_model=16, d_state=8))
    push(run_dir, repo="test-org/mamba2-inverse")
    local, loaded = achilles.load(run_dir), achilles.load("hf-hub:test-org/mamba2-inverse")
    tokens = local.task.generate("test", n=8, seed=1).tokens
    with torch.no_grad():
        assert torch.equal(loaded.model(tokens), local.model(tokens))
    assert loaded.task.config == local.task.config


def test_push_to_a_branch_and_load_that_revision(hub, zoo_registry, toys, tmp_path):
    push(make_run(tmp_path / "a", seed=0))
    push(make_run(tmp_path / "b", seed=1), "--revision", "seed-1", "--private")
    on_main, on_branch = achilles.load(f"hf-hub:{REPO}"), achilles.load(f"hf-hub:{REPO}@seed-1")
    assert (on_main.config["seed"], on_branch.config["seed"]) == (0, 1)
    assert torch.equal(outputs(on_branch.model), outputs(achilles.load(tmp_path / "b").model))


def test_zoo_add_list_show_and_load_by_zoo_id(hub, zoo_registry, toys, tmp_path):
    run_dir = make_run(tmp_path / "run")
    push(run_dir)
    commit = hub.hub.repos[REPO].branches["main"]

    added = achilles_cli("zoo", "add", run_dir, "--repo-id", REPO, "--revision", "main")
    assert added.exit_code == 0, added.output
    zoo_id = f"{toys[0]}.{TOY_TASK}-l2-g0.5-s0-quick"
    entry = json.loads(zoo_registry.read_text())["entries"][0]
    assert entry["id"] == zoo_id and entry["revision"] == commit  # the branch is pinned to its commit
    assert entry["sha256"] == RunFolder(run_dir).read_config()["weights_sha256"]
    assert entry["profile"] == "quick" and entry["headline"]["metric"] == "acc" and "test" in entry["metrics"]

    listed = achilles_cli("zoo", "list", "toy")
    assert listed.exit_code == 0 and zoo_id in listed.stdout and "quick" in listed.stdout
    assert "no zoo entries" in achilles_cli("zoo", "list", "mamba2*").stdout
    shown = achilles_cli("zoo", "show", zoo_id)
    assert shown.exit_code == 0 and commit in shown.stdout and entry["sha256"] in shown.stdout
    assert "not the paper's settings" in shown.stdout

    hub.hub.replace_file(REPO, "README.md", b"a later commit must not change what the id loads")
    loaded = achilles.load(zoo_id)
    assert loaded.path.name == commit
    assert torch.equal(outputs(loaded.model), outputs(achilles.load(run_dir).model))

    again = achilles_cli("zoo", "add", run_dir, "--repo-id", REPO, "--revision", commit)
    assert_one_line_error(again, "already listed")


def test_zoo_add_checks_what_it_records(hub, zoo_registry, toys, tmp_path):
    run_dir = make_run(tmp_path / "run")
    push(run_dir)
    wrong = achilles_cli("zoo", "add", run_dir, "--repo-id", REPO, "--revision", "main", "--sha256", "0" * 64)
    assert_one_line_error(wrong, "--sha256", "is not the sha256")
    other = make_run(tmp_path / "other", seed=7)  # never pushed: its weights are not on the Hub
    unpublished = achilles_cli("zoo", "add", other, "--repo-id", REPO, "--revision", "main")
    assert_one_line_error(unpublished, "are not the ones in")
    unpinned = achilles_cli("zoo", "add", run_dir, "--repo-id", REPO, "--revision", "main", "--no-verify")
    assert_one_line_error(unpinned, "not a commit hash")
    assert json.loads(zoo_registry.read_text())["entries"] == []


def test_packaged_registry_is_a_valid_index():
    from achilles.registry import REGISTRY_FILE
    from achilles.zoo.index import ZooEntry, read_registry

    data = read_registry(REGISTRY_FILE)
    assert data["format"] == "achilles-zoo/2" and "sha256" in data["about"]
    ids = [ZooEntry.from_dict(e).id for e in data["entries"]]
    assert len(ids) == len(set(ids))


# -- plugins contribute zoo entries -----------------------------------------------------
class ThirdPartyZoo:
    @hookimpl
    def register_zoo_entries(self, register):
        register({"id": "their-arch.copy-l2-g1-s0", "repo_id": "them/copy-model", "revision": "a" * 40,
                  "sha256": "b" * 64, "profile": "paper",
                  "headline": {"split": "test", "metric": "exact", "value": 0.97}})
        register({"id": "broken-entry", "repo_id": "them/broken"})


def test_plugin_zoo_entries_show_beside_first_party_ones(zoo_registry):
    first_party = {"id": "ours.inverse-l2-g0.5-s0", "repo_id": "us/inverse", "revision": "c" * 40,
                   "sha256": "d" * 64, "profile": "quick"}
    zoo_registry.write_text(json.dumps({**json.loads(zoo_registry.read_text()), "entries": [first_party]}))
    achilles.register_plugin(ThirdPartyZoo(), name="their-zoo")

    result = achilles_cli("zoo", "list")
    assert result.exit_code == 0, result.output
    rows = {line.split()[0]: line for line in result.stdout.splitlines()[2:]}
    assert set(rows) == {"ours.inverse-l2-g0.5-s0", "their-arch.copy-l2-g1-s0"}
    assert rows["their-arch.copy-l2-g1-s0"].rstrip().endswith("their-zoo")
    assert "test exact 0.97" in rows["their-arch.copy-l2-g1-s0"]
    assert "broken-entry" in result.stderr and "missing sha256" in result.stderr
    assert [e.source for e in list_zoo("their*")] == ["their-zoo"]
    assert "them/copy-model" in achilles_cli("zoo", "show", "their-arch.copy-l2-g1-s0").stdout


# -- offline ----------------------------------------------------------------------------
def test_offline_after_pull(hub, zoo_registry, toys, tmp_path, monkeypatch):
    from huggingface_hub import constants

    run_dir = make_run(tmp_path / "run")
    push(run_dir)
    assert achilles_cli("zoo", "add", run_dir, "--repo-id", REPO, "--revision", "main").exit_code == 0
    zoo_id = list_zoo()[0].id
    achilles.load(zoo_id)  # online: fills the cache for the pinned commit
    achilles.load(f"hf-hub:{REPO}")  # ... and records where main points

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    hub.hub.requests.clear()
    for source in (zoo_id, f"hf-hub:{REPO}"):
        assert torch.equal(outputs(achilles.load(source).model), outputs(achilles.load(run_dir).model))
    assert hub.hub.requests == []  # really offline

    missing = achilles_cli("pull", "hf-hub:test-org/never-pulled")
    assert_one_line_error(missing, "not in the local Hugging Face cache", "HF_HUB_OFFLINE")
    assert_one_line_error(achilles_cli("push", run_dir, "--repo-id", REPO), "HF_HUB_OFFLINE is set")

    # As a user types it: a fresh process that reads HF_HUB_OFFLINE=1 when huggingface_hub is imported.
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "ACHILLES_PLUGINS": ""}  # pulling builds nothing
    proc = subprocess.run([sys.executable, "-c", "from achilles.cli.main import main; main()", "pull", zoo_id],
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(achilles.load(zoo_id).path)


# -- failures: one clear line each, nothing half-written ---------------------------------
def test_missing_repo_wrong_revision_and_missing_file(hub, zoo_registry, toys, tmp_path):
    push(make_run(tmp_path / "run"))
    assert_one_line_error(achilles_cli("pull", "hf-hub:test-org/nope"), "no repository 'test-org/nope'")
    assert_one_line_error(achilles_cli("pull", f"hf-hub:{REPO}@no-such-branch"), "no revision 'no-such-branch'")
    assert_one_line_error(achilles_cli("pull", "hf-hub:not a repo"), "invalid Hub repo id")
    assert_one_line_error(achilles_cli("pull", "test-org/toy-run"), "hf-hub:test-org/toy-run")

    hub.hub.replace_file(REPO, "model.safetensors", None)
    assert_one_line_error(achilles_cli("pull", f"hf-hub:{REPO}"), "has no model.safetensors")


def test_unknown_zoo_id_lists_close_matches(zoo_registry):
    entry = {"id": "mamba2-residual.inverse-l2-g0.5-s0", "repo_id": "us/inverse", "revision": "c" * 40,
             "sha256": "d" * 64}
    zoo_registry.write_text(json.dumps({**json.loads(zoo_registry.read_text()), "entries": [entry]}))
    line = assert_one_line_error(achilles_cli("pull", "mamba2-residual.inverse-l2-g0.5-s1"), "unknown zoo id")
    assert "did you mean: mamba2-residual.inverse-l2-g0.5-s0" in line
    assert_one_line_error(achilles_cli("zoo", "show", "nothing-like-it"), "unknown zoo id")


def test_hash_mismatches_are_refused(hub, zoo_registry, toys, tmp_path):
    run_dir = make_run(tmp_path / "run")
    push(run_dir)
    assert achilles_cli("zoo", "add", run_dir, "--repo-id", REPO, "--revision", "main").exit_code == 0
    index = json.loads(zoo_registry.read_text())
    zoo_id, commit = index["entries"][0]["id"], index["entries"][0]["revision"]

    # The index pins other weights than the Hub serves (a wrong or stale entry).
    index["entries"][0]["sha256"] = "e" * 64
    zoo_registry.write_text(json.dumps(index))
    assert_one_line_error(achilles_cli("pull", zoo_id), f"zoo id {zoo_id!r}", "the zoo index pins eeeeeeeeeeee")
    with pytest.raises(achilles.CheckpointError, match="refusing to load"):
        achilles.load(zoo_id)

    # The Hub serves other bytes at the pinned commit (tampered storage).
    repo = hub.hub.repos[REPO]
    tampered = bytearray(repo.commits[commit]["model.safetensors"])
    tampered[-1] ^= 0xFF
    repo.commits[commit]["model.safetensors"] = bytes(tampered)
    hub_cache = tmp_path / "hf-home" / "hub"
    for path in cache_files(hub_cache):  # forget the good copy so the bad one is fetched
        path.unlink()
    assert_one_line_error(achilles_cli("pull", f"hf-hub:{REPO}@{commit}"), "does not match the sha256")

    # A run folder whose weights were modified after training.
    weights = run_dir / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1] + b"\x00")
    assert_one_line_error(achilles_cli("pull", run_dir), "does not match the sha256")
    assert_one_line_error(achilles_cli("push", run_dir, "--repo-id", REPO), "refusing to push",
                          "does not match the sha256")


@pytest.mark.parametrize("status", ["interrupted", "failed", "running"])
def test_push_refuses_a_run_that_is_not_finished(hub, zoo_registry, toys, tmp_path, status):
    run_dir = make_run(tmp_path / "run", status=status)
    assert_one_line_error(achilles_cli("push", run_dir, "--repo-id", REPO), "refusing to push", "never finished")
    assert REPO not in hub.hub.repos
    # nothing overrides it: --force is gone
    assert achilles_cli("push", run_dir, "--repo-id", REPO, "--force").exit_code != 0
    assert REPO not in hub.hub.repos
    from achilles.zoo.card import render_card  # the card of such a run still says what it is

    card = render_card(run_dir)
    assert "Unfinished run" in card and "did not finish" in card
    assert "paper's" not in card  # toy-count comes from no paper: no paper to depart from


def test_push_without_a_token_says_how_to_log_in(hub, toys, tmp_path, monkeypatch):
    monkeypatch.delenv("HF_TOKEN")
    result = achilles_cli("push", make_run(tmp_path / "run"), "--repo-id", REPO)
    assert_one_line_error(result, "HTTP 401", "hf auth login")


def test_interrupted_download_keeps_nothing_partial(hub, zoo_registry, toys, tmp_path, monkeypatch):
    import huggingface_hub.file_download as file_download

    run_dir = make_run(tmp_path / "run")
    push(run_dir)
    hub.hub.interrupt = {"model.safetensors"}
    monkeypatch.setattr(file_download.time, "sleep", lambda seconds: None)  # the client's retry pauses
    assert_one_line_error(achilles_cli("pull", f"hf-hub:{REPO}"), "connection broke off")

    hub_cache = tmp_path / "hf-home" / "hub"
    assert not [p for p in cache_files(hub_cache) if "incomplete" in p.name]
    assert not list(hub_cache.rglob("snapshots/*/model.safetensors"))
    assert sorted(p.name for p in run_dir.iterdir() if not p.name.startswith(".achilles")) == sorted(
        ["checkpoint", "config.json", "init.safetensors", "loss.png", "metrics.jsonl", "model.safetensors",
         "run.json"])

    hub.hub.interrupt = set()  # the connection is back: the same command completes the snapshot
    assert torch.equal(outputs(achilles.load(f"hf-hub:{REPO}").model), outputs(achilles.load(run_dir).model))
