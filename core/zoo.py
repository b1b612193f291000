"""The zoo: published checkpoints, findable by id, loadable and verified (timm-style).

The index is ``registry/zoo.json`` (see ``achilles.registry``) plus whatever plugins
contribute through the ``register_zoo_entries`` hook. An entry pins a Hub repo, a commit
and the sha256 of the weights::

    {"id": "mamba2-residual.inverse-l2-g0.5-s0", "repo_id": "org/name",
     "revision": "<40-hex commit>", "sha256": "<64-hex>", "arch": ..., "task": ...,
     "profile": "paper", "headline": {"split": "test", "metric": "acc", "value": 0.98},
     "metrics": {"train": 1.0, "test": 0.98}, "added": "2026-01-31"}

``load(source)`` accepts a run folder, a zoo id or ``hf-hub:ORG/NAME[@REVISION]`` and returns
a ``LoadedRun`` (``.model`` in eval mode, ``.task``, ``.config``, ``.path``). Zoo ids follow the
trainer's run names, ``ARCH.TASK-lLAYERS-gGAMMA-sSEED[-PROFILE]``, e.g.
``mamba2-residual.inverse-l2-g0.5-s0`` (a ``-quick`` suffix marks a non-paper profile).
"""

from __future__ import annotations

import datetime as _dt
import fnmatch
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import CheckpointError, UnknownNameError
from .runs import CONFIG, WEIGHTS, LoadedRun, RunFolder, atomic_write_json, file_sha256, load_run

REGISTRY_FORMAT = "achilles-zoo/1"
FIRST_PARTY = "achilles"
ZOO_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_REQUIRED = ("id", "repo_id", "revision", "sha256")


# -- ids --------------------------------------------------------------------------------
def suggest_zoo_id(config: dict[str, Any]) -> str:
    """The conventional zoo id of a run: the trainer's run name, ``ARCH.TASK-lL-gGAMMA-sSEED``
    plus ``-PROFILE`` unless it was trained with the paper's settings."""
    from .trainer import default_run_name

    name = default_run_name(str(config.get("arch")), str(config.get("task")), config.get("model") or {},
                            config.get("seed"), (config.get("training") or {}).get("profile") or "unknown")
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)


# -- entries ----------------------------------------------------------------------------
@dataclass(frozen=True)
class ZooEntry:
    id: str
    repo_id: str
    revision: str
    sha256: str
    arch: str | None = None
    task: str | None = None
    variant: str | None = None
    seed: int | None = None
    profile: str | None = None
    headline: dict[str, Any] | None = None
    metrics: dict[str, Any] | None = None
    added: str | None = None
    source: str = FIRST_PARTY  # "achilles" for registry/zoo.json, else the plugin's name
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = FIRST_PARTY) -> "ZooEntry":
        missing = [k for k in _REQUIRED if not isinstance(data.get(k), str) or not data.get(k)]
        if missing:
            raise ValueError(f"missing {', '.join(missing)}")
        if not ZOO_ID_PATTERN.match(data["id"]):
            raise ValueError(f"invalid id {data['id']!r}")
        if not _SHA256.match(data["sha256"]):
            raise ValueError("sha256 is not 64 lowercase hex digits")
        known = {f for f in cls.__dataclass_fields__ if f not in ("source", "extra")}
        data = {k: v for k, v in data.items() if k != "plugin"}
        return cls(**{k: v for k, v in data.items() if k in known}, source=source,
                   extra={k: v for k, v in data.items() if k not in known})

    def to_dict(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in self.__dataclass_fields__ if k not in ("source", "extra")}
        return {**{k: v for k, v in out.items() if v is not None}, **self.extra}

    @property
    def hub_ref(self):
        from .hub import HubRef

        return HubRef(self.repo_id, self.revision)

    def headline_text(self) -> str:
        h = self.headline or {}
        if not isinstance(h.get("value"), (int, float)):
            return ""
        return f"{h.get('split')} {h.get('metric')} {h['value']:.4g}"


# -- the index --------------------------------------------------------------------------
def registry_path() -> Path:
    from achilles.registry import registry_path as _path

    return _path()


def read_registry(path: str | Path | None = None) -> dict[str, Any]:
    """The raw index file (``format``, ``about``, ``entries``), validated."""
    path = Path(path) if path is not None else registry_path()
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"zoo index {path} does not exist") from None
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"zoo index {path} is not valid JSON ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != REGISTRY_FORMAT or not isinstance(data.get("entries"), list):
        raise CheckpointError(f"zoo index {path} is not an achilles zoo index (format {REGISTRY_FORMAT!r} with "
                              "an 'entries' list expected)")
    return data


@dataclass
class ZooIndex:
    entries: dict[str, ZooEntry]
    problems: list[str]  # plugin entries skipped, and why


def zoo_index() -> ZooIndex:
    """First-party entries from the index file, then plugin entries (an id is never shadowed)."""
    from .plugin_manager import get_state

    path = registry_path()
    entries: dict[str, ZooEntry] = {}
    for i, raw in enumerate(read_registry(path)["entries"]):
        try:
            entry = ZooEntry.from_dict(raw)
        except (ValueError, TypeError, AttributeError) as exc:
            raise CheckpointError(f"zoo index {path}: entry {i + 1} is invalid ({exc})") from None
        if entry.id in entries:
            raise CheckpointError(f"zoo index {path}: id {entry.id!r} is listed twice")
        entries[entry.id] = entry
    problems = []
    for raw in get_state().zoo_entries:
        plugin = raw.get("plugin", "?") if isinstance(raw, dict) else "?"
        try:
            entry = ZooEntry.from_dict(raw, source=plugin)
        except (ValueError, TypeError, AttributeError) as exc:
            problems.append(f"plugin {plugin!r}: zoo entry {raw.get('id', '?') if isinstance(raw, dict) else raw!r} "
                            f"skipped ({exc})")
            continue
        if entry.id in entries:
            problems.append(f"plugin {plugin!r}: zoo id {entry.id!r} skipped (already listed by "
                            f"{entries[entry.id].source!r})")
            continue
        entries[entry.id] = entry
    return ZooIndex(entries, problems)


def list_zoo(pattern: str = "") -> list[ZooEntry]:
    """Entries whose id matches ``pattern`` (wildcards; a plain word matches anywhere in the id)."""
    entries = zoo_index().entries
    if pattern and not any(c in pattern for c in "*?["):
        pattern = f"*{pattern}*"
    return [entries[k] for k in sorted(entries) if not pattern or fnmatch.fnmatchcase(k, pattern)]


def unknown_zoo_id(zoo_id: str, known: list[str]) -> UnknownNameError:
    error = UnknownNameError("zoo id", zoo_id, known)
    if not known:  # the generic hint blames a missing plugin; here the index is simply empty
        error.args = (f"unknown zoo id {zoo_id!r}; the zoo index {registry_path()} lists no checkpoints yet",)
    return error


def get_entry(zoo_id: str) -> ZooEntry:
    entries = zoo_index().entries
    if zoo_id not in entries:
        raise unknown_zoo_id(zoo_id, list(entries))
    return entries[zoo_id]


def entry_from_run(run_dir: str | Path, repo_id: str, revision: str, zoo_id: str | None = None) -> ZooEntry:
    """The index entry describing a local run published at ``repo_id@revision``."""
    run = RunFolder(run_dir)
    config = run.read_config()
    if not (run.path / WEIGHTS).is_file():
        raise CheckpointError(f"{run.path} has no {WEIGHTS}")
    sha = file_sha256(run.path / WEIGHTS)
    if sha != config.get("weights_sha256"):
        raise CheckpointError(f"{run.path}/{WEIGHTS} does not match the sha256 recorded in its {CONFIG}; "
                              "an entry must describe the weights as published")
    headline = config.get("headline") or None
    metric = (headline or {}).get("metric")
    metrics = {split: values[metric] for split, values in (config.get("final_metrics") or {}).items()
               if isinstance(values, dict) and isinstance(values.get(metric), (int, float))}
    from achilles.cards.render import task_variant

    return ZooEntry(id=zoo_id or suggest_zoo_id(config), repo_id=repo_id, revision=revision, sha256=sha,
                    arch=config.get("arch"), task=config.get("task"), variant=task_variant(config),
                    seed=config.get("seed"), profile=(config.get("training") or {}).get("profile"),
                    headline=headline, metrics=metrics or None, added=_dt.date.today().isoformat())


def add_entry(run_dir: str | Path, repo_id: str, revision: str, *, zoo_id: str | None = None,
              sha256: str | None = None, verify: bool = True) -> ZooEntry:
    """Append the entry of a published run to the index file and return it.

    ``revision`` may be a branch or tag: it is pinned to the commit it points at now.
    ``verify`` downloads the published weights and checks they are the local ones;
    ``sha256``, if given, must equal the weights' hash (a guard against the wrong run)."""
    from .hub import HubRef, check_repo_id, download_run, resolve_revision

    check_repo_id(repo_id)
    if zoo_id is not None and not ZOO_ID_PATTERN.match(zoo_id):
        raise CheckpointError(f"invalid zoo id {zoo_id!r}: use letters, digits, '.', '-' and '_'")
    if not _COMMIT.match(revision):
        if not verify:
            raise CheckpointError(f"revision {revision!r} is not a commit hash; pass the 40-hex commit "
                                  "(it is printed by `achilles push`) or let achilles resolve it (drop --no-verify)")
        revision = resolve_revision(HubRef(repo_id, revision))
    entry = entry_from_run(run_dir, repo_id, revision, zoo_id)
    if sha256 is not None and sha256.lower() != entry.sha256:
        raise CheckpointError(f"--sha256 {sha256[:12]}… is not the sha256 of {run_dir}/{WEIGHTS} "
                              f"({entry.sha256[:12]}…)")
    path = registry_path()
    if entry.id in zoo_index().entries:
        raise CheckpointError(f"zoo id {entry.id!r} is already listed; choose another with --id or edit {path}")
    if verify:
        published = file_sha256(download_run(entry.hub_ref) / WEIGHTS)
        if published != entry.sha256:
            raise CheckpointError(f"the weights at {entry.hub_ref} (sha256 {published[:12]}…) are not the ones in "
                                  f"{run_dir} ({entry.sha256[:12]}…); push the run first or pick its commit")
    data = read_registry(path)
    data["entries"] = sorted(data["entries"] + [entry.to_dict()], key=lambda e: e.get("id", ""))
    atomic_write_json(path, data)
    return entry


# -- pull and load ----------------------------------------------------------------------
@dataclass
class PulledRun:
    """A verified run folder on local disk and where it came from."""

    path: Path
    config: dict[str, Any]
    origin: str  # "run folder", "zoo id X -> hf-hub:...@...", "hf-hub:..."
    entry: ZooEntry | None = None


def _looks_like_path(text: str) -> bool:
    return os.sep in text or "/" in text or text.startswith((".", "~"))


def pull(source: str | Path) -> PulledRun:
    """Make ``source`` (a run folder, a zoo id or ``hf-hub:ORG/NAME[@REV]``) available locally,
    its weights checked against every recorded sha256; nothing is unpickled or built."""
    from .hub import download_run, is_hub_ref, parse_hub_ref

    text = str(source)
    if not isinstance(source, Path) and is_hub_ref(text):
        ref = parse_hub_ref(text)
        path = download_run(ref)
        config = _verified_config(path, expected=None, what=str(ref))
        return PulledRun(path, config, str(ref))
    path = Path(text).expanduser()
    if isinstance(source, Path) or path.is_dir():
        if not path.is_dir():
            raise CheckpointError(f"no run folder at {path}")
        return PulledRun(path, _verified_config(path, None, str(path)), "run folder")
    index = zoo_index().entries
    if text in index:
        entry = index[text]
        path = download_run(entry.hub_ref)
        config = _verified_config(path, expected=entry.sha256, what=f"zoo id {entry.id!r} ({entry.hub_ref})")
        return PulledRun(path, config, f"zoo id {entry.id} -> {entry.hub_ref}", entry)
    if _looks_like_path(text):
        hint = f" (for a Hub repository write hf-hub:{text})" if text.count("/") == 1 else ""
        raise CheckpointError(f"no run folder at {text}{hint}")
    raise unknown_zoo_id(text, list(index))


def _verified_config(path: Path, expected: str | None, what: str) -> dict[str, Any]:
    """The run config at ``path`` once its weights match the config's sha256 (and ``expected``)."""
    config = RunFolder(path).read_config()
    recorded = config.get("weights_sha256")
    if not recorded:
        raise CheckpointError(f"{what}: {CONFIG} records no sha256 for {WEIGHTS}; refusing unverified weights")
    if not (path / WEIGHTS).is_file():
        raise CheckpointError(f"{what}: {WEIGHTS} is missing")
    actual = file_sha256(path / WEIGHTS)
    if expected is not None and actual != expected:
        raise CheckpointError(f"{what}: the weights have sha256 {actual[:12]}… but the zoo index pins "
                              f"{expected[:12]}…; refusing to load them (the Hub copy changed or the entry is wrong)")
    if expected is not None and recorded != expected:
        raise CheckpointError(f"{what}: {CONFIG} records sha256 {recorded[:12]}… but the zoo index pins "
                              f"{expected[:12]}…; refusing to load it")
    if actual != recorded:
        raise CheckpointError(f"{what}: {WEIGHTS} does not match the sha256 in its {CONFIG} (recorded "
                              f"{recorded[:12]}…, file {actual[:12]}…): corrupt or modified; refusing to load it")
    return config


def load(source: str | Path, device: str = "cpu") -> LoadedRun:
    """Load a model and its task from a run folder, a zoo id or ``hf-hub:ORG/NAME[@REVISION]``.

    Hub downloads go through the Hugging Face cache and work offline once cached. The weights
    are checked against the sha256 in the run's ``config.json`` and, for a zoo id, the one the
    index pins. Returns ``LoadedRun(model, task, config, path)``; the model is in eval mode::

        run = achilles.load("mamba2-residual.inverse-l2-g0.5-s0")
        batch = run.task.generate("test", n=8)
        logits = run.model(batch.tokens)
    """
    return load_run(pull(source).path, device=device)
