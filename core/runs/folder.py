"""A run folder read and written as one record: ``RunFolder`` (config.json and run.json presented
as one dict, metrics, weights), the checks a record passes when read back, and the run's default
name. The files it holds are listed in ``layout.py``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
import re
from typing import Any

import torch

from achilles.errors import AchillesError, CheckpointError
from achilles.runs.files import (atomic_write_json, atomic_write_text, json_bytes, load_tensors, read_json_object,
                                 read_json_or_none, save_tensors)
from achilles.runs.layout import (_KEPT, CHECKPOINT_DIR, CHECKPOINT_STATE, CONFIG, INIT_WEIGHTS, METRICS,
                                  MODEL_CONFIG_KEYS, RECORD, RUN_FORMAT, RUN_FORMAT_V1, WEIGHTS)
from achilles.runs.run_lock import RunLock
from achilles.runs.ownership import claim, own_regular_file


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
            check_record(model_config, self.path, v1=True)
            return model_config
        check_model_config(model_config, self.path / CONFIG)
        record = read_json_object(self.path / RECORD, f"{self.path} holds a model ({CONFIG}) but no run record, "
                                  "so it is not a run folder (load the model with HookedModel.from_pretrained)")
        if record.get("format") != RUN_FORMAT:
            raise CheckpointError(f"{self.path / RECORD} is not an achilles run record (format {RUN_FORMAT!r} "
                                  f"expected, found {record.get('format')!r})")
        config = merge_config(model_config, record)
        check_record(config, self.path)
        return config

    def write_config(self, config: dict[str, Any]) -> None:
        weights = [n for n, key in ((WEIGHTS, "weights_sha256"), (INIT_WEIGHTS, "init_sha256")) if config.get(key)]
        claim(self.path, CONFIG, *([] if self.layout() == RUN_FORMAT_V1 else [RECORD]), *weights)
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
        claim(self.path, METRICS)
        try:
            atomic_write_text(self.path / METRICS, "".join(json.dumps(r) + "\n" for r in lines))
        except OSError as exc:  # a full disk: the run is marked failed, its last checkpoint kept
            raise saving_failed(self, exc) from None

    def truncate_metrics(self, epochs: int) -> None:
        """Keep the records of the first ``epochs`` epochs (on resume from a checkpoint)."""
        lines = [r for r in self.read_metrics() if r.get("epoch", 0) <= epochs]
        claim(self.path, METRICS)
        atomic_write_text(self.path / METRICS, "".join(json.dumps(r) + "\n" for r in lines))

    def read_metrics(self) -> list[dict[str, Any]]:
        file = self.path / METRICS
        if not file.is_file():
            return []
        return read_metrics_file(file)

    # -- safety: who may write, and what belongs to the run (see the functions below) ---------
    def lock(self, action: str, reading: bool = False) -> "RunLock":
        """The folder's one-writer lock (not yet acquired): ``with run.lock("probe"): ...``.
        ``reading``: the action only reads (push), so a folder nobody can write needs no lock."""
        return RunLock(self.path, action, reading)

    def save_weights(self, state_dict: dict[str, torch.Tensor], name: str = WEIGHTS) -> str:
        claim(self.path, name)
        return save_tensors(self.path / name, state_dict, metadata={"format": "pt"})

    def load_weights(self, name: str = WEIGHTS, verify: bool = True) -> dict[str, torch.Tensor]:
        expected = None
        if verify and name == WEIGHTS:
            expected = self.read_config().get("weights_sha256")
            if not expected:
                raise CheckpointError(f"{self.path} records no sha256 for {WEIGHTS}; refusing to load unverified weights")
        return load_tensors(self.path / name, expected)


# -- the record's shape -----------------------------------------------------------------
#: key -> (accepted types, what to call them); a key that is present must have one of the types
_RECORD_TYPES: dict[str, tuple[tuple[type, ...], str]] = {
    "arch": ((str,), "a name"), "task": ((str,), "a name"), "status": ((str,), "a word"),
    "model": ((dict,), "an object of settings"), "task_config": ((dict,), "an object of settings"),
    "training": ((dict,), "an object of settings"), "seed": ((int,), "an integer"),
    "epochs_completed": ((int,), "an integer"), "weights_sha256": ((str, type(None)), "a sha256 or null"),
    "init_sha256": ((str, type(None)), "a sha256 or null"),
    "final_metrics": ((dict,), "an object"), "provided_by": ((dict,), "an object"),
}


def check_record(config: dict[str, Any], folder: Path, v1: bool = False) -> None:
    """Refuse a run record whose keys are missing or have the wrong type (hand-edited or
    corrupted), naming the file and the key, instead of failing later inside training or loading."""
    def file(key: str) -> Path:
        return folder / (CONFIG if v1 or key in ("arch", "model") else RECORD)

    for key in ("arch", "task"):
        if key not in config:
            raise CheckpointError(f"{file(key)} has no {key!r}; it is not a complete run record (restore it, or "
                                  "train the run again with --overwrite)")
    for key, (types, what) in _RECORD_TYPES.items():
        value = config.get(key)
        if key in config and (not isinstance(value, types) or isinstance(value, bool)):
            raise CheckpointError(f"{file(key)}: {key!r} should be {what}, not {value!r:.60}; the file was edited "
                                  "or corrupted (restore it, or train the run again with --overwrite)")


def read_metrics_file(file: Path) -> list[dict[str, Any]]:
    """The records of a metrics.jsonl; a broken line is named instead of failing as an internal error."""
    try:
        lines = file.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise CheckpointError(f"{file} is not UTF-8 text; restore it, or train the run again with --overwrite") from None
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            record = None
        if not isinstance(record, dict):
            raise CheckpointError(f"{file}: line {number} is not a JSON object; remove that line (or train the run "
                                  "again with --overwrite)")
        records.append(record)
    return records


# -- a file of the run that cannot be saved (disk full, ...) -------------------------------------
_SAVING = " while saving "


def saving_failed(run: RunFolder, exc: OSError) -> CheckpointError:
    """Mark ``run`` failed because one of its files could not be saved (the disk is full, ...): its
    last good checkpoint stays as it was. Returns the one-line error to raise, saying what to do."""
    import errno

    file = Path(exc.filename) if exc.filename else None
    try:
        name = file.relative_to(run.path).as_posix() if file else "a file of the run"
    except ValueError:
        name = str(file)
    full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
    what = "disk full" if full else (exc.strerror or str(exc)).lower()
    state = read_json_or_none(run.path / CHECKPOINT_STATE)
    kept = state.get("epoch") if isinstance(state, dict) else None
    fix = "free some space" if full else "fix that"
    then = (f"the last good checkpoint (epoch {kept}) is kept. {fix[0].upper() + fix[1:]}, then resume with: "
            f"achilles train --resume {run.path}" if kept is not None else
            f"no checkpoint was saved yet. {fix[0].upper() + fix[1:]}, then train it again with --out {run.path} "
            "--overwrite")
    reason = f"{what}{_SAVING}{name}; {then}"
    try:
        run.update_config(status="failed", failure=reason)
    except OSError:
        if not _record_in_place(run, status="failed", failure=reason):
            reason += " (its run.json could not record this either)"
    except AchillesError:
        reason += " (its run.json could not record this either)"
    return CheckpointError(f"run {run.path} failed: {reason}")


def _record_in_place(run: RunFolder, **changes: Any) -> bool:
    """On a full disk, where even a small atomic write cannot get a block: rewrite run.json in the
    blocks it already has (only when the new record fits in them, so the write cannot fail half-way)."""
    try:
        config = run.read_config()
        if run.layout() != RUN_FORMAT:
            return False
        data = json_bytes(split_config({**config, **changes})[1])
        file = run.path / RECORD
        if file.is_symlink() or len(data) > file.stat().st_blocks * 512:
            return False
        fd = os.open(file, os.O_WRONLY)
        try:
            os.write(fd, data)
            os.ftruncate(fd, len(data))
            os.fsync(fd)
        finally:
            os.close(fd)
        return True
    except (OSError, AchillesError):
        return False


def failed_while_saving(config: dict[str, Any]) -> bool:
    """Whether a failed run failed only because a file could not be saved (resumable, unlike a run
    whose training diverged)."""
    return config.get("status") == "failed" and _SAVING in str(config.get("failure") or "")


# -- the checkpoint's state file --------------------------------------------------------
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def read_checkpoint_state(run_dir: str | Path, epochs: int) -> dict[str, Any] | None:
    """``checkpoint/state.json`` of a run once it is sound: the files it names lie in checkpoint/
    (plain names, no links), its hashes look like hashes, its epoch is within 0..``epochs``.
    None when there is no checkpoint yet."""
    run_dir = Path(run_dir)
    file = run_dir / CHECKPOINT_STATE
    if not file.is_file():
        return None
    fix = f"the checkpoint cannot be used: train the run again with `achilles train --out {run_dir} --overwrite ...`"
    try:
        state = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{file} is corrupt ({exc}); {fix}") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{file} is not a JSON object; {fix}")
    epoch = state.get("epoch")
    if isinstance(epoch, bool) or not isinstance(epoch, int) or not 0 <= epoch <= epochs:
        raise CheckpointError(f"{file}: epoch {epoch!r} is not a whole number of epochs within 0..{epochs}; {fix}")
    for key in ("model", "optimizer"):
        name = state.get(key)
        if (not isinstance(name, str) or not name or Path(name).name != name or name.startswith(".")
                or not own_regular_file(run_dir / CHECKPOINT_DIR, name)):
            raise CheckpointError(f"{file}: {key!r} names {name!r}, which is not a file inside "
                                  f"{run_dir / CHECKPOINT_DIR}; refusing to resume from it ({fix})")
        sha = state.get(f"{key}_sha256")
        if not isinstance(sha, str) or not _SHA256.match(sha):
            raise CheckpointError(f"{file}: {key}_sha256 is not a sha256; {fix}")
    if not isinstance(state.get("param_groups"), list) or not all(isinstance(g, dict) for g in state["param_groups"]):
        raise CheckpointError(f"{file}: 'param_groups' is not a list of objects; {fix}")
    return state


def default_run_name(arch: str, task: str, model_config: dict, seed: int, profile: str) -> str:
    """Zoo-style name, e.g. ``mamba2-residual.inverse-l2-g0.5-s0`` (``-quick`` for the quick profile)."""
    name = f"{arch}.{task}-l{model_config.get('n_layers', '?')}-g{model_config.get('gamma', '?')}-s{seed}"
    return name if profile == "paper" else f"{name}-{profile}"


def recorded_data_seed(config: dict[str, Any]) -> int:
    """The data seed a run record says its training and evaluation samples were drawn with: the
    resolved ``training.data_seed`` (runs before per-seed data record 0), the run's seed where a
    record leaves it unresolved, 0 for a record without training settings (a bare model)."""
    training = config.get("training") or {}
    value = training.get("data_seed", 0)
    if value is None:
        value = config.get("seed", 0)
    return int(value) if isinstance(value, int) and not isinstance(value, bool) else 0


def is_run_folder(path: str | Path) -> bool:
    """Whether ``path`` is an achilles run folder (a readable run record, not a link)."""
    file = Path(path) / CONFIG
    if file.is_symlink() or not file.is_file():
        return False
    try:
        return RunFolder(path).read_config() is not None
    except CheckpointError:
        return False


def check_run_target(path: str | Path, option: str = "--out") -> None:
    """Refuse to train into ``path`` unless it is new, empty, or an achilles run folder: a user's
    folder is never written into (nor, with --overwrite, emptied)."""
    path = Path(path)
    if not os.path.lexists(path):
        return
    if not path.is_dir():
        raise AchillesError(f"{option} {path} exists and is not a folder; choose another {option}")
    entries = sorted(p.name for p in path.iterdir() if p.name not in _KEPT)
    if not entries or is_run_folder(path):
        return
    shown = ", ".join(entries[:4]) + (", ..." if len(entries) > 4 else "")
    raise AchillesError(f"{option} {path} is not an achilles run folder (it holds {shown}); achilles trains only "
                        f"into a new or empty folder or one of its own runs: choose another {option}")
