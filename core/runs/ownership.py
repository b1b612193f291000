"""What in a folder is achilles': the manifest of the files a run wrote (``.achilles-files``), so
that ``--overwrite`` removes those and nothing of the user's, and folders created only where no
link leads elsewhere (``owned_folder``)."""

from __future__ import annotations

import json
import os
from pathlib import Path
import shutil
import stat

from achilles.errors import CheckpointError
from achilles.runs.files import atomic_write_json
from achilles.runs.layout import _KEPT, _LEGACY_OWNED, MANIFEST, OWNED_DIRS


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
