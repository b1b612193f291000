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
import re
import shutil
import stat
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from achilles.errors import AchillesError, CheckpointError


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
CHECKPOINT_STATE = f"{CHECKPOINT_DIR}/state.json"
PROBES_DIR = "probes"


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
    except SafetensorError as exc:  # safetensors reports a full disk as its own error: say it as an OSError
        Path(tmp).unlink(missing_ok=True)
        raise OSError(_errno_of(str(exc)), f"could not save {path.name} ({exc})", str(path)) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return file_sha256(path)


def _errno_of(message: str) -> int:
    """The errno in a safetensors I/O error (``Os { code: 28, ... }``), else EIO."""
    import errno

    found = re.search(r"(?:code: |os error )(\d+)", message)
    return int(found.group(1)) if found else errno.EIO


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
        if os.path.lexists(file) and not file.is_symlink():  # a folder (or a pipe) where the file should be
            kind = "a folder" if file.is_dir() else "not a regular file"
            raise CheckpointError(f"{file} is {kind}, not the file achilles wrote there: the folder is damaged; "
                                  f"restore {file.name}, or move the folder away")
        raise CheckpointError(f"{missing} (no {file.name})")
    try:
        data = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{file} is not valid JSON ({exc})") from None
    except OSError as exc:  # a file achilles wrote that it cannot read back (permissions, I/O error)
        raise CheckpointError(f"{file} cannot be read ({exc.strerror or exc}): fix its permissions or restore it, "
                              "then run the command again") from None
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


@dataclass
class LoadedRun:
    model: torch.nn.Module
    task: Any
    config: dict[str, Any]
    path: Path


def build_from_config(config: dict[str, Any]):
    """(model, task) from a run config, weights not loaded."""
    from achilles.contract.lookup import create_model, rebuild_task
    from achilles.contract.provenance import require_components

    require_components(config)  # a missing plugin is named with what to install
    task = rebuild_task(config["task"], config.get("task_config", {}))
    model = create_model(config["arch"], **config.get("model", {}))
    return model, task


def load_run(path: str | Path, device: str | torch.device = "cpu") -> LoadedRun:
    """Rebuild model and task of a run folder and load its sha256-verified weights."""
    from achilles.contract.lookup import rebuild_task
    from achilles.models.pretrained import build_checked
    from achilles.contract.provenance import require_components

    run = RunFolder(path)
    config = run.read_config()
    require_components(config)  # a missing plugin is named
    task = rebuild_task(config["task"], config.get("task_config", {}))
    expected = config.get("weights_sha256")
    if not expected:
        raise CheckpointError(f"{run.path} records no sha256 for {WEIGHTS}; refusing to load unverified weights")
    # config and weights checked (limits, shapes, sha256) before anything is built: an untrusted run is data
    model = build_checked(config["arch"], config.get("model", {}), run.path / WEIGHTS, expected, what=str(run.path),
                         device=str(device))
    return LoadedRun(model, task, config, run.path)


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


# -- one writer per run folder ----------------------------------------------------------
LOCK_FILE = ".achilles.lock"
LOCK_OWNER = ".achilles.lock.owner"  # who holds the lock: named in the refusal of the next one


class RunFolderBusy(AchillesError):
    """Another achilles process (train, probe, push) is writing or reading the run folder."""


class RunLock:
    """The lock a process holds while it writes (or publishes) a run folder: train, probe and push
    take it, and another process's is refused at once, naming who holds it (``filelock``; the
    operating system frees it when its holder dies). Within one process the lock is shared: a
    library user may hold a Trainer and resume or load the same folder."""

    def __init__(self, path: str | Path, action: str, reading: bool = False):
        from filelock import FileLock

        self.path, self.action, self.reading = Path(path), action, reading
        # one FileLock per lock file in this process (a counter of its holders)
        self._lock = FileLock(os.path.realpath(self.path / LOCK_FILE), timeout=0, is_singleton=True)
        self._acquired = False

    @property
    def held(self) -> bool:
        return self._acquired

    def acquire(self) -> "RunLock":
        from filelock import Timeout

        if self._acquired:
            return self
        try:
            self._lock.acquire()
        except Timeout:
            raise RunFolderBusy(f"run folder {self.path} is in use by {self._holder()}; wait until it "
                                f"finishes (or stop it), then run the {self.action} again") from None
        except OSError as exc:
            if self.reading and not os.access(self.path, os.W_OK):
                return self  # nobody can write a folder we cannot lock: reading it is safe
            raise CheckpointError(f"cannot lock run folder {self.path} ({exc.strerror or exc}): "
                                  "it must be writable") from None
        self._acquired = True
        if self._lock.lock_counter == 1:
            try:
                atomic_write_json(self.path / LOCK_OWNER, {"pid": os.getpid(), "action": self.action,
                                                           "since": time.strftime("%Y-%m-%d %H:%M:%S")})
            except OSError:
                pass  # the owner note only improves the message of a refused second writer
        return self

    def release(self) -> None:
        if not self._acquired:
            return
        self._acquired = False
        if self._lock.lock_counter == 1:
            (self.path / LOCK_OWNER).unlink(missing_ok=True)
        self._lock.release()

    def _holder(self) -> str:
        try:
            owner = json.loads((self.path / LOCK_OWNER).read_text())
            return f"`achilles {owner['action']}` (pid {owner['pid']}, since {owner['since']})"
        except (OSError, ValueError, KeyError, TypeError):
            return "another achilles process"

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


# -- what a run folder owns -------------------------------------------------------------
#: Files achilles writes at the top of a run folder (run.json: the record of the split layout)
OWNED_FILES = (CONFIG, "run.json", WEIGHTS, INIT_WEIGHTS, METRICS, CARD)
#: Folders achilles writes in a run folder
OWNED_DIRS = (CHECKPOINT_DIR, PROBES_DIR, "tensorboard", "evals")
#: The run's own list of what it wrote at the top of its folder (JSON list of names), kept in the
#: folder and written atomically: --overwrite removes these names (and the leftovers of their
#: interrupted atomic writes), nothing else. A folder from before the list: the fixed names below.
MANIFEST = ".achilles-files"
_LEGACY_OWNED = (*OWNED_FILES, *OWNED_DIRS, "training_curves.png")
_KEPT = (LOCK_FILE, LOCK_OWNER, MANIFEST)


def is_owned_name(name: str, owned: set[str] | tuple[str, ...] = _LEGACY_OWNED) -> bool:
    """Whether ``name`` is one the run wrote (in ``owned``), or the leftover of an interrupted atomic
    write of one (``.NAME.XXXX.tmp``, ``.NAME.tmp.png``); never decided by a pattern alone."""
    return name in owned or any(name.startswith(f".{o}.") and name.endswith((".tmp", ".tmp.png")) for o in owned)


def read_manifest(path: str | Path) -> set[str] | None:
    """The names the run in ``path`` recorded as written by it (None: no list, or not readable)."""
    file = Path(path) / MANIFEST
    if file.is_symlink() or not file.is_file():
        return None
    try:
        names = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(names, list):
        return None
    return {n for n in names if isinstance(n, str) and n not in ("", ".", "..") and Path(n).name == n}


def owned_names(path: str | Path) -> set[str]:
    """What the run in ``path`` wrote at the top of its folder (its manifest, else the fixed names)."""
    manifest = read_manifest(path)
    return set(_LEGACY_OWNED) if manifest is None else manifest


def claim(path: str | Path, *names: str) -> None:
    """Record in the run folder's manifest that the run writes ``names`` (top-level files or folders),
    before writing them. A folder from before the manifest starts it with the fixed names it holds."""
    path = Path(path)
    known = read_manifest(path)
    if known is not None and known.issuperset(names):
        return
    if known is None:
        known = {n for n in _LEGACY_OWNED if os.path.lexists(path / n)}
    atomic_write_json(path / MANIFEST, sorted(known | set(names)))


def owned_folder(root: str | Path, *parts: str, create: bool = True) -> Path:
    """``root/parts...``, a folder achilles writes into inside ``root``: every part below ``root`` must
    be a real folder, never a symbolic link (the writes would land wherever it points) nor a file.
    Missing parts are created (``create``). The one check of every write site below a folder
    achilles owns (run folders, sweep and reproduction folders, the run store)."""
    current = Path(root)
    if create and parts:
        current.mkdir(parents=True, exist_ok=True)  # the root itself: the folder the user named
    for part in parts:
        current = current / part
        try:
            mode = current.lstat().st_mode
        except FileNotFoundError:
            if create:
                current.mkdir(exist_ok=True)
            continue
        if stat.S_ISLNK(mode):
            raise CheckpointError(f"{current} is a symbolic link (to {os.readlink(current)}); achilles writes only "
                                  "inside folders it owns, never through a link: remove the link and run the "
                                  "command again")
        if not stat.S_ISDIR(mode):
            raise CheckpointError(f"{current} should be a folder but is a file; move it away and run the command "
                                  "again")
    return current


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


def clear_run_folder(path: str | Path) -> list[str]:
    """Remove what the run wrote (the names its manifest lists: record, weights, metrics, card, its
    figures, checkpoint/, probes/, ...) and nothing else; a link is removed, never followed.
    Returns the names removed."""
    path = Path(path)
    owned = owned_names(path)
    removed = []
    for entry in sorted(path.iterdir()):
        mode = entry.lstat().st_mode
        # a link where the run writes is removed too (the link only: nothing of the user's is lost)
        link_in_the_way = stat.S_ISLNK(mode) and entry.name in _LEGACY_OWNED
        if entry.name in _KEPT or not (is_owned_name(entry.name, owned) or link_in_the_way):
            continue
        if stat.S_ISDIR(mode):
            shutil.rmtree(entry)  # removes links inside, never their targets
        else:
            entry.unlink()  # a file, or a link (the link only)
        removed.append(entry.name)
    (path / MANIFEST).unlink(missing_ok=True)  # the next run lists what it writes
    return removed


def check_owned_folders(path: str | Path, names: tuple[str, ...] = OWNED_DIRS) -> None:
    """Refuse to write a run folder in which a folder it writes into is a symbolic link (the writes
    would land wherever the link points; a linked file is only ever replaced, atomically) or is
    not a folder at all."""
    path = Path(path)
    for name in names:
        entry = path / name
        if entry.is_symlink():
            raise CheckpointError(f"{entry} is a symbolic link (to {os.readlink(entry)}); achilles does not write "
                                  "through links out of a run folder: remove the link, or start again with --overwrite")
        if entry.exists() and not entry.is_dir():
            raise CheckpointError(f"{entry} should be a folder but is a file; move it away, or start again with "
                                  "--overwrite")


def own_regular_file(run_dir: str | Path, name: str) -> bool:
    """Whether ``run_dir/name`` is a regular file of the run itself: no link anywhere on the way,
    nothing outside the folder (what may be published)."""
    run_dir = Path(run_dir)
    parts = Path(name).parts
    if not parts or Path(name).is_absolute() or ".." in parts:
        return False
    current = run_dir
    for part in parts:
        current = current / part
        try:
            mode = current.lstat().st_mode
        except OSError:
            return False
        if stat.S_ISLNK(mode):
            return False
    return stat.S_ISREG(mode)


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
