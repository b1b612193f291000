"""Run folders and checkpoint I/O: atomic writes, safetensors only, sha256-verified loads.

A run folder holds::

    config.json         the model: ``format``, ``arch`` and the model's settings at the top level
                        (what huggingface_hub's ModelHubMixin and a reader expect)
    run.json            the run record: task and its settings, training settings, seed, status,
                        final metrics, the weights' sha256
    model.safetensors   final (or latest) weights; sha256 recorded in run.json
    init.safetensors    the weights at initialisation (for conv-kernel similarity)
    metrics.jsonl       one JSON record per epoch
    README.md           the model card
    checkpoint/         trainer state for resume (tensors in safetensors, rest in JSON)
    *.png               figures

Nothing is ever unpickled: tensors go through safetensors, everything else is JSON.

Code reads and writes the record through ``RunFolder.read_config()`` / ``update_config()``,
which present both files as one dict (``arch`` and ``model`` included). Run folders of the
first format (``achilles-run/1``: everything nested in config.json, no run.json) still read,
resume and probe; they keep their layout when updated, and are exported in the current layout
(``RunFolder.export_record()``) when pushed or bundled.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .errors import CheckpointError


def _file_mode() -> int:
    """mkstemp creates files 0600; run files should get the permissions any other file would."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask

RUN_FORMAT = "achilles-run/2"
RUN_FORMAT_V1 = "achilles-run/1"  # everything nested in config.json
CONFIG = "config.json"
RECORD = "run.json"
WEIGHTS = "model.safetensors"
INIT_WEIGHTS = "init.safetensors"
METRICS = "metrics.jsonl"
CARD = "README.md"
CHECKPOINT_DIR = "checkpoint"


# -- atomic writes ---------------------------------------------------------------------
def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` so that ``path`` holds either the old or the new content, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, _file_mode())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def json_bytes(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode("utf-8")


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_bytes(path, json_bytes(obj))


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# -- tensors ----------------------------------------------------------------------------
def save_tensors(path: str | Path, tensors: dict[str, torch.Tensor],
                 metadata: dict[str, str] | None = None) -> str:
    """Atomically save ``tensors`` as safetensors; return the file's sha256."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=metadata)
        os.chmod(tmp, _file_mode())  # safetensors recreates the file, so set the mode after
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return file_sha256(path)


def load_tensors(path: str | Path, expected_sha256: str | None = None,
                 device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """Load a safetensors file, refusing it if it is missing, corrupt or not the recorded one."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"missing weights file {path}")
    if expected_sha256 is not None:
        actual = file_sha256(path)
        if actual != expected_sha256:
            raise CheckpointError(
                f"{path} does not match its recorded sha256 (expected {expected_sha256[:12]}…, "
                f"got {actual[:12]}…): the file is corrupt or was modified; refusing to load it")
    try:
        return load_file(str(path), device=str(device))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path} is not a readable safetensors file ({exc})") from None


# -- the on-disk layout of the record (format 2: config.json = the model, run.json = the run) --
#: Keys of config.json that are not model settings.
MODEL_CONFIG_KEYS = ("format", "arch")


def read_json_object(file: Path, missing: str) -> dict[str, Any]:
    """A JSON object from ``file``; ``missing`` is the message when the file does not exist."""
    if not file.is_file():
        raise CheckpointError(f"{missing} (no {file.name})")
    try:
        data = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{file} is not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{file} is not a JSON object")
    return data


def read_json_or_none(file: Path) -> Any:
    try:
        return json.loads(file.read_text())
    except (OSError, ValueError):
        return None


def check_model_config(model_config: dict[str, Any], file: Path) -> None:
    """Refuse a config.json that is not an achilles model's, saying what it is instead."""
    found = model_config.get("format")
    if found == RUN_FORMAT and isinstance(model_config.get("arch"), str):
        return
    if found is None and "model_type" in model_config:
        what = f"a transformers config (model_type {model_config['model_type']!r})"
    elif found is None:
        keys = ", ".join(list(model_config)[:6]) or "nothing"
        what = f"a config.json without a format (keys: {keys})"
    else:
        what = f"format {found!r}"
    raise CheckpointError(f"{file} is not an achilles model config ({RUN_FORMAT!r} with an 'arch' expected); "
                          f"found {what}")


def split_config(config: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(config.json, run.json) of a merged record: the model's settings at the top of the first."""
    model = dict(config.get("model") or {})
    clash = [k for k in MODEL_CONFIG_KEYS if k in model]
    if clash:
        raise CheckpointError(f"model setting {clash[0]!r} clashes with a reserved key of {CONFIG}")
    model_config = {"format": RUN_FORMAT, "arch": config.get("arch"), **model}
    record = {"format": RUN_FORMAT, **{k: v for k, v in config.items() if k not in ("format", "arch", "model")}}
    return model_config, record


def merge_config(model_config: dict[str, Any], record: dict[str, Any]) -> dict[str, Any]:
    """The merged record (what ``read_config`` returns) of a config.json and a run.json."""
    model = {k: v for k, v in model_config.items() if k not in MODEL_CONFIG_KEYS}
    return {"format": RUN_FORMAT, "arch": model_config["arch"], "model": model,
            **{k: v for k, v in record.items() if k != "format"}}


def model_settings(folder: str | Path) -> tuple[str, dict[str, Any], dict[str, Any] | None]:
    """(arch, model settings, run record or None) of a run folder (either layout) or of a model
    folder written by ``save_pretrained`` (config.json alone, no run record)."""
    folder = Path(folder)
    model_config = read_json_object(folder / CONFIG, f"{folder} is not an achilles model folder")
    if model_config.get("format") == RUN_FORMAT_V1:
        config = RunFolder(folder).read_config()
        return config["arch"], dict(config.get("model") or {}), config
    check_model_config(model_config, folder / CONFIG)
    record = RunFolder(folder).read_config() if (folder / RECORD).is_file() else None
    return model_config["arch"], {k: v for k, v in model_config.items() if k not in MODEL_CONFIG_KEYS}, record


# -- the run folder ---------------------------------------------------------------------
class RunFolder:
    """Read and write the files of one run."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def exists(self) -> bool:
        return (self.path / CONFIG).is_file()

    def layout(self) -> str:
        """The folder's format: ``achilles-run/2`` (also for a new folder) or ``achilles-run/1``."""
        existing = read_json_or_none(self.path / CONFIG)
        if isinstance(existing, dict) and existing.get("format") == RUN_FORMAT_V1:
            return RUN_FORMAT_V1
        return RUN_FORMAT

    def export_record(self) -> dict[str, bytes]:
        """config.json and run.json in the current layout (what a push or a bundle carries)."""
        model_config, record = split_config(self.read_config())
        return {CONFIG: json_bytes(model_config), RECORD: json_bytes(record)}

    def read_config(self) -> dict[str, Any]:
        """The run record with ``arch`` and ``model``, whatever the folder's layout."""
        model_config = read_json_object(self.path / CONFIG, f"{self.path} is not a run folder")
        if model_config.get("format") == RUN_FORMAT_V1:
            return model_config
        check_model_config(model_config, self.path / CONFIG)
        record = read_json_object(self.path / RECORD, f"{self.path} holds a model ({CONFIG}) but no run record, "
                                  "so it is not a run folder (load the model with HookedModel.from_pretrained)")
        if record.get("format") != RUN_FORMAT:
            raise CheckpointError(f"{self.path / RECORD} is not an achilles run record (format {RUN_FORMAT!r} "
                                  f"expected, found {record.get('format')!r})")
        return merge_config(model_config, record)

    def write_config(self, config: dict[str, Any]) -> None:
        if self.layout() == RUN_FORMAT_V1:  # an old folder keeps its layout
            atomic_write_json(self.path / CONFIG, {**config, "format": RUN_FORMAT_V1})
            return
        model_config, record = split_config(config)
        # The record first: config.json present means the folder is complete. The model part is
        # rewritten only when it changes, so a status update is one atomic file write.
        atomic_write_json(self.path / RECORD, record)
        if read_json_or_none(self.path / CONFIG) != model_config:
            atomic_write_json(self.path / CONFIG, model_config)

    def update_config(self, **changes: Any) -> dict[str, Any]:
        config = self.read_config()
        config.update(changes)
        self.write_config(config)
        return config

    def append_metrics(self, record: dict[str, Any]) -> None:
        # Rewritten whole and atomically: a crash never leaves a torn last line.
        lines = self.read_metrics() + [record]
        atomic_write_text(self.path / METRICS, "".join(json.dumps(r) + "\n" for r in lines))

    def truncate_metrics(self, epochs: int) -> None:
        """Keep the records of the first ``epochs`` epochs (on resume from a checkpoint)."""
        lines = [r for r in self.read_metrics() if r.get("epoch", 0) <= epochs]
        atomic_write_text(self.path / METRICS, "".join(json.dumps(r) + "\n" for r in lines))

    def read_metrics(self) -> list[dict[str, Any]]:
        file = self.path / METRICS
        if not file.is_file():
            return []
        return [json.loads(line) for line in file.read_text().splitlines() if line.strip()]

    def save_weights(self, state_dict: dict[str, torch.Tensor], name: str = WEIGHTS) -> str:
        return save_tensors(self.path / name, state_dict, metadata={"format": "pt"})

    def load_weights(self, name: str = WEIGHTS, verify: bool = True) -> dict[str, torch.Tensor]:
        expected = None
        if verify and name == WEIGHTS:
            expected = self.read_config().get("weights_sha256")
            if not expected:
                raise CheckpointError(f"{self.path} records no sha256 for {WEIGHTS}; refusing to load unverified weights")
        return load_tensors(self.path / name, expected)


@dataclass
class LoadedRun:
    model: torch.nn.Module
    task: Any
    config: dict[str, Any]
    path: Path


def build_from_config(config: dict[str, Any]):
    """(model, task) from a run config, weights not loaded."""
    from .api import create_model, rebuild_task

    task = rebuild_task(config["task"], config.get("task_config", {}))
    model = create_model(config["arch"], **config.get("model", {}))
    return model, task


def load_run(path: str | Path, device: str | torch.device = "cpu") -> LoadedRun:
    """Rebuild model and task of a run folder and load its sha256-verified weights."""
    run = RunFolder(path)
    config = run.read_config()
    model, task = build_from_config(config)
    state = run.load_weights()
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise CheckpointError(f"weights in {run.path} do not fit {config['arch']!r}: "
                              f"missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}")
    model.to(device).eval()
    return LoadedRun(model, task, config, run.path)
