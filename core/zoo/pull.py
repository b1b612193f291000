"""Pulling and loading zoo checkpoints: a zoo id, ``hf-hub:ORG/NAME[@REV]`` or a run folder made
available locally with every recorded sha256 checked, then loaded (``achilles.load``) or built
(``create_pretrained``, behind ``achilles.create_model(NAME, pretrained=True)``)."""

from __future__ import annotations

from dataclasses import dataclass, replace
import logging
import os
from pathlib import Path
from typing import Any

from achilles.errors import CheckpointError
from achilles.models.loading import _LOADING, build_checked, build_pretrained, load_run, LoadedRun
from achilles.models.pretrained import fetch_model_folder
from achilles.runs.files import file_sha256
from achilles.runs.folder import model_settings, RunFolder
from achilles.runs.layout import WEIGHTS
from achilles.zoo.index import _zoo_entries_or_none, unknown_zoo_id, zoo_index, ZooEntry

log = logging.getLogger("achilles.zoo.pull")


# -- pull and load ----------------------------------------------------------------------
@dataclass
class PulledRun:
    """A verified run folder on local disk and where it came from."""

    path: Path
    config: dict[str, Any]
    origin: str  # "run folder", "zoo id X -> hf-hub:...@...", "zoo id X (bundled)", "hf-hub:..."
    entry: ZooEntry | None = None


def _looks_like_path(text: str) -> bool:
    return os.sep in text or "/" in text or text.startswith((".", "~"))


def pull(source: str | Path, *, revision: str | None = None, cache_dir: str | Path | None = None,
         token: str | bool | None = None) -> PulledRun:
    """Make ``source`` (a run folder, a zoo id or ``hf-hub:ORG/NAME[@REV]``) available locally,
    its weights checked against every recorded sha256; nothing is unpickled or built.

    ``revision``, ``cache_dir`` and ``token`` are those of huggingface_hub (for Hub ids)."""
    from achilles.models.hub_refs import is_hub_ref, parse_hub_ref

    text = str(source)
    if not isinstance(source, Path) and is_hub_ref(text):
        ref = parse_hub_ref(text)
        if revision is not None:
            if ref.revision not in (None, revision):
                raise CheckpointError(f"{text} names revision {ref.revision!r} but revision={revision!r} was "
                                      "passed too; give one")
            ref = replace(ref, revision=revision)
        path, config = _download_verified(ref, None, str(ref), text, cache_dir, token)
        return PulledRun(path, config, str(ref))
    path = Path(text).expanduser()
    # A zoo id always means the zoo entry: a folder of the same name is reached as ./NAME.
    index = _zoo_entries_or_none() if not isinstance(source, Path) and not _looks_like_path(text) else None
    if index is not None and text in index:
        if path.is_dir():
            log.warning(f"{text!r} is a zoo id and also a folder here; the zoo entry is used "
                        f"(write ./{text} for the folder)")
        return pull_entry(index[text], revision=revision, cache_dir=cache_dir, token=token)
    if isinstance(source, Path) or path.is_dir():
        if not path.is_dir():
            raise CheckpointError(f"no run folder at {path}")
        if revision is not None:
            raise CheckpointError(f"revision={revision!r} applies to Hub ids, not to the run folder {path}")
        return PulledRun(path, _verified_config(path, None, str(path)), "run folder")
    index = zoo_index().entries if index is None else index
    if _looks_like_path(text):
        hint = f" (for a Hub repository write hf-hub:{text})" if text.count("/") == 1 else ""
        raise CheckpointError(f"no run folder at {text}{hint}")
    raise unknown_zoo_id(text, list(index))


def pull_entry(entry: ZooEntry, *, revision: str | None = None, cache_dir: str | Path | None = None,
               token: str | bool | None = None) -> PulledRun:
    """A zoo entry's verified run folder: from its pinned Hub commit when published, else (or
    when the Hub cannot be reached) its bundled copy."""
    from achilles.models.hub_refs import HubUnavailableError

    if revision is not None and revision != entry.revision:
        pinned = f"pinned to {entry.revision}" if entry.is_published else "not published"
        raise CheckpointError(f"zoo id {entry.id!r} is {pinned}; for another revision load "
                              f"hf-hub:ORG/NAME@{revision} instead")
    what = f"zoo id {entry.id!r}"
    if entry.is_published:
        try:
            path, config = _download_verified(entry.hub_ref, entry.sha256, f"{what} ({entry.hub_ref})", entry.id,
                                              cache_dir, token)
        except HubUnavailableError:
            if not entry.bundled:
                raise
        else:
            return PulledRun(path, config, f"zoo id {entry.id} -> {entry.hub_ref}", entry)
    path = verified_bundle(entry)
    origin = f"zoo id {entry.id} (bundled copy" + ("; the Hub is unavailable)" if entry.is_published else ")")
    return PulledRun(path, _verified_config(path, expected=entry.sha256, what=f"{what} (bundled)"), origin, entry)


def verified_bundle(entry: ZooEntry) -> Path:
    """The bundled folder of ``entry`` once its weights' bytes match the index's sha256."""
    folder = entry.bundle_path()
    if folder is None:
        raise CheckpointError(f"zoo id {entry.id!r} has no bundled copy")
    weights = folder / WEIGHTS
    if not weights.is_file():
        raise CheckpointError(f"zoo id {entry.id!r}: its bundled weights {weights} are missing "
                              "(an incomplete install or checkout)")
    actual = file_sha256(weights)
    if actual != entry.sha256:
        raise CheckpointError(f"zoo id {entry.id!r}: the bundled weights {weights} have sha256 {actual} but the "
                              f"zoo index records {entry.sha256}; refusing to load them")
    return folder


def names_local_folder(source: str | Path) -> bool:
    """Whether ``load(source)`` reads a local folder (not a zoo entry or a Hub download)."""
    from achilles.models.hub_refs import is_hub_ref

    text = str(source)
    if isinstance(source, Path):
        return True
    if is_hub_ref(text) or not Path(text).expanduser().is_dir():
        return False
    if _looks_like_path(text):
        return True
    entries = _zoo_entries_or_none()
    return entries is None or text not in entries


class HashMismatch(CheckpointError):
    """Weights whose sha256 is not the recorded (or pinned) one."""


def _download_verified(ref, expected: str | None, what: str, source: str, cache_dir: str | Path | None,
                       token: str | bool | None) -> tuple[Path, dict[str, Any]]:
    """Download ``ref`` and verify it; a copy in the Hugging Face cache that fails the check (a
    corrupted blob) is downloaded again once, and a copy that cannot be is named with the fix."""
    from achilles.models.hub_refs import HubUnavailableError, is_offline
    from achilles.zoo.hub import download_run

    path = download_run(ref, cache_dir=cache_dir, token=token)
    try:
        return path, _verified_config(path, expected, what)
    except HashMismatch as exc:
        if is_offline():
            raise HashMismatch(f"{exc}; the copy in the Hugging Face cache ({path}) may be corrupt: run "
                               f"`achilles pull {source}` online to fetch it again") from None
        log.debug(f"{what}: the cached copy fails its sha256 check; downloading it again")
    try:
        path = download_run(ref, cache_dir=cache_dir, token=token, force=True)
    except HubUnavailableError as exc:
        raise CheckpointError(f"{what}: the cached copy fails its sha256 check and cannot be downloaded again "
                              f"({exc}); run `achilles pull {source}` once the Hub can be reached") from None
    try:
        return path, _verified_config(path, expected, what)
    except HashMismatch as exc:
        raise HashMismatch(f"{exc} (after downloading it again: the Hub's copy itself does not match)") from None


def _verified_config(path: Path, expected: str | None, what: str) -> dict[str, Any]:
    """The run config at ``path`` once its weights match the config's sha256 (and ``expected``)."""
    if not (path / WEIGHTS).is_file():
        raise CheckpointError(f"{what}: {WEIGHTS} is missing")
    actual = file_sha256(path / WEIGHTS)
    if expected is not None and actual != expected:
        raise HashMismatch(f"{what}: the weights have sha256 {actual[:12]}… but the zoo index pins "
                              f"{expected[:12]}…; refusing to load them (the Hub copy changed or the entry is wrong)")
    config = RunFolder(path).read_config()
    recorded = config.get("weights_sha256")
    if not recorded:
        raise CheckpointError(f"{what}: the run record holds no sha256 for {WEIGHTS}; refusing unverified weights")
    if expected is not None and recorded != expected:
        raise CheckpointError(f"{what}: the run record holds sha256 {recorded[:12]}… but the zoo index pins "
                              f"{expected[:12]}…; refusing to load it")
    if actual != recorded:
        raise HashMismatch(f"{what}: {WEIGHTS} does not match the sha256 in its run record (recorded "
                              f"{recorded[:12]}…, file {actual[:12]}…): corrupt or modified; refusing to load it")
    return config


def load(source: str | Path, device: str = "cpu", *, revision: str | None = None,
         cache_dir: str | Path | None = None, token: str | bool | None = None) -> LoadedRun:
    """Load a model and its task from a run folder, a zoo id or ``hf-hub:ORG/NAME[@REVISION]``.

    Hub downloads go through the Hugging Face cache (``cache_dir``, default HF_HUB_CACHE) and work
    offline once cached; ``revision`` pins a branch, tag or commit of a Hub id; ``token`` reads a
    private repository. A zoo id loads its pinned Hub commit, or its bundled copy when
    unpublished or offline. The weights are checked against the sha256 in the run record and, for
    a zoo id, the one the index pins, before anything is built; so are the model config (against
    the memory limits train applies) and the weights file's header (names, shapes, dtypes against
    the model measured on the meta device): see ``pretrained.build_checked``. Returns
    ``LoadedRun(model, task, config, path)``; the model is in eval mode::

        run = achilles.load("mamba2-residual.inverse-l2-g0.5-s0")
        batch = run.task.generate("test", n=8)
        logits = run.model(batch.tokens)
    """
    return load_run(pull(source, revision=revision, cache_dir=cache_dir, token=token).path, device=device)


def create_pretrained(name: str, pretrained: bool = False, **overrides: Any):
    """``achilles.create_model`` for a checkpoint: ``hf-hub:ORG/NAME[@REV]``, a zoo id or a model
    folder. With ``pretrained`` the weights are loaded; without, the architecture is built with the
    checkpoint's settings and freshly initialised (timm's behaviour)."""
    from achilles.models.hub_refs import is_hub_ref, parse_hub_ref
    from achilles.zoo.pull import names_local_folder

    outer = _LOADING.get()
    if outer is not None:
        raise CheckpointError(f"{outer}: loading it would load the checkpoint {name!r} too; a checkpoint's config "
                              "never names another checkpoint (loading is one level deep)")
    if is_hub_ref(name):
        ref = parse_hub_ref(name)
        if pretrained:
            from achilles.models.hook_points import HookedModel

            return HookedModel.from_pretrained(ref.repo_id, revision=ref.revision, **overrides)
        folder = fetch_model_folder(ref.repo_id, ref.revision, weights=False)
    elif os.path.isdir(name) and names_local_folder(name):  # a zoo id is never shadowed by a folder
        folder = Path(name)
    else:
        from achilles.zoo.index import list_pretrained, zoo_index
        from achilles.zoo.pull import pull

        if name not in zoo_index().entries:
            if not pretrained:
                return None  # not a checkpoint name: the caller reports the unknown architecture
            known = list_pretrained(f"{name}.*")
            raise CheckpointError(f"no checkpoint named {name!r}: pretrained=True takes a zoo id or hf-hub:ORG/NAME"
                                  + (f" (zoo ids of {name}: {', '.join(known[:5])})" if known else
                                     " (achilles.list_pretrained() lists the zoo)"))
        folder = pull(name).path
    if pretrained:
        return build_pretrained(folder, overrides, what=name)
    arch, settings, record = model_settings(folder)
    from achilles.contract.provenance import require_components

    require_components({**(record or {}), "arch": arch}, kinds=("architecture",))
    # without the weights: the config is still checked against them when they are here (a local folder, a zoo
    # entry), so that a config describing another model than its own weights is refused before building it
    weights = folder / WEIGHTS if (folder / WEIGHTS).is_file() else None
    return build_checked(arch, {**settings, **overrides}, weights, (record or {}).get("weights_sha256") or None,
                         what=name, load_weights=False)
