"""File I/O for everything achilles writes: atomic writes (a crash never leaves half a file),
JSON, and tensors in safetensors only, loaded sha256-verified. Nothing is ever unpickled."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
import re
import tempfile
from typing import Any

from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
import torch

from achilles.errors import CheckpointError


def _file_mode() -> int:
    """mkstemp creates files 0600; run files should get the permissions any other file would."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


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
