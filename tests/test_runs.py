"""Run folders: atomic writes, safetensors weights, refusing corrupt or tampered files."""

import pytest
import torch

import achilles
from achilles.runs.folder import RunFolder
from achilles.models.loading import load_run
from achilles.runs.files import save_tensors, load_tensors

import toy_plugin


def make_run(tmp_path):
    achilles.register_plugin(toy_plugin, "toy")
    torch.manual_seed(0)
    model = achilles.create_model("toy-mixer")
    run = RunFolder(tmp_path / "run")
    run.write_config(dict(arch="toy-mixer", model=model.config, task="toy-count", task_config={},
                          status="finished"))
    sha = run.save_weights(model.state_dict())
    run.update_config(weights_sha256=sha)
    return run, model


def test_saved_run_loads_with_identical_outputs(tmp_path):
    run, model = make_run(tmp_path)
    loaded = load_run(run.path)
    tokens = torch.randint(0, 8, (2, 6))
    assert torch.equal(loaded.model(tokens), model.eval()(tokens))
    assert loaded.task.config == {"vocab": 4, "length": 6}


def test_tampered_weights_are_refused(tmp_path):
    run, _ = make_run(tmp_path)
    weights = run.path / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(achilles.CheckpointError, match="does not match its recorded sha256"):
        load_run(run.path)


def test_corrupt_file_is_refused_not_unpickled(tmp_path):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(b"\x80\x04not a safetensors file")
    with pytest.raises(achilles.CheckpointError, match="not a readable safetensors"):
        load_tensors(path)


def test_not_a_run_folder(tmp_path):
    with pytest.raises(achilles.CheckpointError, match="not a run folder"):
        load_run(tmp_path)


def test_failed_save_leaves_the_previous_file_intact(tmp_path, monkeypatch):
    path = tmp_path / "w.safetensors"
    save_tensors(path, {"a": torch.ones(2)})
    import achilles.runs.files as runs

    def explode(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(runs, "save_file", explode)
    with pytest.raises(OSError):
        save_tensors(path, {"a": torch.zeros(2)})
    assert torch.equal(load_tensors(path)["a"], torch.ones(2))
    assert [p.name for p in tmp_path.iterdir()] == ["w.safetensors"]


def test_run_files_get_ordinary_permissions(tmp_path):
    import os
    from achilles.runs.files import atomic_write_text
    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a.json", "{}")
        save_tensors(tmp_path / "w.safetensors", {"a": torch.ones(1)})
    finally:
        os.umask(old)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "w.safetensors").stat().st_mode & 0o777 == 0o644
