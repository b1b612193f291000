"""Fixtures for the zoo tests: a local Hub, an isolated HF cache and zoo index, the toy
task and architecture, and real run folders. Import the fixtures into a test module with
``from hub_fixtures import *``.

Nothing here reaches the internet: huggingface_hub reads its endpoint and cache paths at
import time, so the ``hub`` fixture patches ``huggingface_hub.constants`` as well as the
environment, and blocks name resolution of any host but localhost while a test runs.
"""

from __future__ import annotations

import json
import socket
import sys
from pathlib import Path

import pytest
import torch

import achilles
from achilles.runs.folder import RunFolder
from achilles.runs.ownership import claim
import toy_plugin
from hub_server import HubServer

__all__ = ["hub", "zoo_registry", "toys", "make_run", "LOCAL_HOSTS", "TOY_ARCH", "TOY_TASK"]

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
TOY_ARCH, TOY_TASK = "toy-mixer", "toy-count"


# -- the toy task and architecture of tests/toy_plugin.py (no first-party code needed) ------
@pytest.fixture
def toys():
    name = "zoo-test-toys"
    achilles.register_plugin(toy_plugin, name=name)
    yield TOY_ARCH, TOY_TASK
    achilles.unregister_plugin(name)


def make_run(path: Path, seed: int = 0, status: str = "finished", profile: str = "quick",
             arch: str = TOY_ARCH, task: str = TOY_TASK, model_config: dict | None = None) -> Path:
    """A real run folder, as the trainer would leave it (without spending time training)."""
    from achilles.training.trainer import build_task_and_model

    task_obj, model, model_cfg, task_cfg = build_task_and_model(arch, task, dict(model_config or {}), {}, seed)
    run = RunFolder(path)
    run.save_weights(model.state_dict(), name="init.safetensors")
    with torch.no_grad():  # "training": the final weights differ from the initial ones
        for param in model.parameters():
            param.add_(0.01 * torch.sign(param))
    sha = run.save_weights(model.state_dict())
    split = task_obj.headline_split
    batch = task_obj.generate(split, n=16, seed=seed)
    with torch.no_grad():
        scores = task_obj.metrics(model.eval()(batch.tokens), batch)
    metric = task_obj.headline_metric
    run.write_config({
        "achilles_version": achilles.__version__, "arch": arch, "model": model_cfg,
        "task": task, "task_config": task_cfg,
        "training": {"profile": profile, "epochs": 1, "lr": 1e-3, "batch_size": 8},
        "seed": seed, "status": status, "epochs_completed": 1, "weights_sha256": sha,
        "final_metrics": {"train": {metric: 0.5}, split: scores},
        "headline": {"split": split, "metric": metric, "value": scores[metric]},
        "created": "2026-01-01T00:00:00Z", "finished": "2026-01-01T00:01:00Z",
    })
    run.append_metrics({"epoch": 1, "loss": 2.0, f"{split}_{metric}": scores[metric]})
    claim(run.path, "loss.png")  # a figure of the run's own (listed as achilles lists what it writes)
    (run.path / "loss.png").write_bytes(b"\x89PNG\r\n\x1a\n fake figure")
    (run.path / "checkpoint").mkdir()
    (run.path / "checkpoint" / "trainer.json").write_text("{}")  # must never be published
    return run.path


# -- the local Hub and an isolated Hugging Face environment ------------------------------
@pytest.fixture
def hub(tmp_path, monkeypatch):
    """A running local Hub; huggingface_hub points at it, with a fresh cache and a dummy token."""
    from huggingface_hub import constants

    server = HubServer().start()
    hf_home = tmp_path / "hf-home"
    env = {"HF_ENDPOINT": server.endpoint, "HF_HOME": str(hf_home), "HF_HUB_CACHE": str(hf_home / "hub"),
           "HF_TOKEN": "hf_local_test_token", "HF_HUB_OFFLINE": "0", "HF_HUB_DISABLE_TELEMETRY": "1",
           "HF_HUB_DISABLE_XET": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1", "DO_NOT_TRACK": "1",
           "NO_PROXY": ",".join(LOCAL_HOSTS), "no_proxy": ",".join(LOCAL_HOSTS)}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    # Paths derived from HF_HOME at import time (token, cache, agent registry, ...) move too.
    old_home = constants.HF_HOME
    for name, value in list(vars(constants).items()):
        if name.isupper() and isinstance(value, str) and value.startswith(old_home):
            monkeypatch.setattr(constants, name, str(hf_home) + value[len(old_home):])
    for name, value in {"ENDPOINT": server.endpoint, "HF_HUB_CACHE": str(hf_home / "hub"),
                        "HUGGINGFACE_CO_URL_TEMPLATE": server.endpoint + "/{repo_id}/resolve/{revision}/{filename}",
                        "HF_HUB_OFFLINE": False, "HF_HUB_DISABLE_XET": True,
                        "HF_HUB_DISABLE_TELEMETRY": True}.items():
        monkeypatch.setattr(constants, name, value)

    # Quiet stderr: the module (shadowed by its tqdm class as an attribute) copied the flag at import.
    monkeypatch.setattr(sys.modules["huggingface_hub.utils.tqdm"], "HF_HUB_DISABLE_PROGRESS_BARS", True)

    real_getaddrinfo = socket.getaddrinfo

    def local_only(host, *args, **kwargs):
        if host not in LOCAL_HOSTS:
            raise OSError(f"test guard: network access to {host!r} is blocked")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", local_only)
    yield server
    server.stop()


@pytest.fixture
def zoo_registry(tmp_path, monkeypatch):
    """An empty zoo index in a temporary file (the packaged one is never written by tests)."""
    from achilles.registry import REGISTRY_ENV, REGISTRY_FILE

    path = tmp_path / "zoo.json"
    data = json.loads(REGISTRY_FILE.read_text())
    assert data["entries"] == [] or isinstance(data["entries"], list)
    path.write_text(json.dumps({**data, "entries": []}, indent=2))
    monkeypatch.setenv(REGISTRY_ENV, str(path))
    return path
