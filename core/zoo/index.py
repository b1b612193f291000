"""The zoo: checkpoints findable by id, loadable offline and verified (timm-style).

The index is ``registry/zoo.json`` (see ``achilles.registry``) plus whatever plugins contribute
through the ``register_zoo_entries`` hook. An entry pins the sha256 of its weights and says
where they are: bundled inside the package (``bundled``: a run folder beside the index), on the
Hub (``repo_id`` + the 40-hex commit ``revision``), or both once ``achilles zoo publish`` has
pushed a bundled entry::

    {"id": "mamba2-residual.inverse-l2-g0.5-s0-quick", "sha256": "<64 hex>",
     "bundled": "bundled/mamba2-residual.inverse-l2-g0.5-s0-quick",
     "repo_id": "ORG/mamba2-residual.inverse-l2-g0.5-s0-quick", "revision": "<40 hex>",
     "published": "2026-02-01", "arch": "mamba2-residual", "task": "inverse", "variant": null,
     "seed": 0, "profile": "quick", "budget": {"epochs": 6, "train_samples": 80000, ...},
     "headline": {"split": "test", "metric": "acc", "value": 0.98},
     "metrics": {"test": 0.98, "ood": 0.51}, "report": "examples/reports/achilles-fig9/report.md", "added": "2026-01-31"}

Adding entries and publishing them is ``achilles.zoo.curation`` (``achilles zoo add|publish``).

``load(source)`` accepts a run folder, a zoo id or ``hf-hub:ORG/NAME[@REVISION]`` and returns a
``LoadedRun`` (``.model`` in eval mode, ``.task``, ``.config``, ``.path``). A published entry
loads from its pinned Hub commit (through the Hugging Face cache) and falls back to its bundled
copy when the Hub cannot be reached; either way the weights' sha256 is checked against the
index before anything is built. Zoo ids follow the trainer's run names,
``ARCH.TASK-lLAYERS-gGAMMA-sSEED[-PROFILE]`` (a ``-quick`` suffix marks a non-paper profile).
"""

from __future__ import annotations

import fnmatch
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from achilles.errors import CheckpointError, UnknownNameError
from achilles.runs.files import atomic_write_json

log = logging.getLogger("achilles.zoo.index")

REGISTRY_FORMAT = "achilles-zoo/2"
REGISTRY_FORMAT_V1 = "achilles-zoo/1"  # every entry on the Hub; still read
FIRST_PARTY = "achilles"
BUNDLE_DIR = "bundled"
ZOO_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
COMMIT = re.compile(r"^[0-9a-f]{40}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
#: Hub repository names are at most 96 characters.
MAX_REPO_NAME = 96


# -- ids --------------------------------------------------------------------------------
def suggest_zoo_id(config: dict[str, Any]) -> str:
    """The conventional zoo id of a run: the trainer's run name, ``ARCH.TASK-lL-gGAMMA-sSEED``
    plus ``-PROFILE`` unless it was trained with the paper's settings."""
    from achilles.runs.folder import default_run_name

    name = default_run_name(str(config.get("arch")), str(config.get("task")), config.get("model") or {},
                            config.get("seed"), (config.get("training") or {}).get("profile") or "unknown")
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)


def check_zoo_id(zoo_id: str) -> str:
    if not ZOO_ID_PATTERN.match(zoo_id or ""):
        raise CheckpointError(f"invalid zoo id {zoo_id!r}: use letters, digits, '.', '-' and '_'")
    return zoo_id


# -- entries ----------------------------------------------------------------------------
@dataclass(frozen=True)
class ZooEntry:
    id: str
    sha256: str
    repo_id: str | None = None
    revision: str | None = None
    bundled: str | None = None  # the bundled run folder, relative to the index file's folder
    arch: str | None = None
    task: str | None = None
    variant: str | None = None
    seed: int | None = None
    profile: str | None = None
    budget: dict[str, Any] | None = None
    headline: dict[str, Any] | None = None
    metrics: dict[str, Any] | None = None
    report: str | None = None
    added: str | None = None
    published: str | None = None
    source: str = FIRST_PARTY  # "achilles" for registry/zoo.json, else the plugin's name
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = FIRST_PARTY) -> "ZooEntry":
        missing = [k for k in ("id", "sha256") if not isinstance(data.get(k), str) or not data.get(k)]
        if missing:
            raise ValueError(f"missing {', '.join(missing)}")
        if not ZOO_ID_PATTERN.match(data["id"]):
            raise ValueError(f"invalid id {data['id']!r}")
        if not _SHA256.match(data["sha256"]):
            raise ValueError("sha256 is not 64 lowercase hex digits")
        hub = [k for k in ("repo_id", "revision") if data.get(k)]
        if len(hub) == 1:
            raise ValueError(f"{hub[0]} without {({'repo_id', 'revision'} - set(hub)).pop()} "
                             "(a published entry pins both)")
        if not hub and not data.get("bundled"):
            raise ValueError("missing repo_id, revision or bundled (where are the weights?)")
        if data.get("revision") and not COMMIT.match(str(data["revision"])):
            raise ValueError("revision is not a 40-hex commit")
        bundled = data.get("bundled")
        if bundled is not None:
            if not isinstance(bundled, str) or ".." in Path(bundled).parts:
                raise ValueError(f"invalid bundled folder {bundled!r}")
            if source != FIRST_PARTY and not Path(bundled).is_absolute():
                raise ValueError("a plugin's bundled folder must be an absolute path")
        known = {f for f in cls.__dataclass_fields__ if f not in ("source", "extra")}
        data = {k: v for k, v in data.items() if k != "plugin"}
        return cls(**{k: v for k, v in data.items() if k in known}, source=source,
                   extra={k: v for k, v in data.items() if k not in known})

    def to_dict(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in self.__dataclass_fields__ if k not in ("source", "extra")}
        return {**{k: v for k, v in out.items() if v is not None}, **self.extra}

    @property
    def is_published(self) -> bool:
        return bool(self.repo_id and self.revision)

    @property
    def hub_ref(self):
        from achilles.models.hub_refs import HubRef

        return HubRef(self.repo_id, self.revision)

    def bundle_path(self) -> Path | None:
        """The bundled run folder, or None."""
        if not self.bundled:
            return None
        path = Path(self.bundled)
        return path if path.is_absolute() else registry_path().parent / path

    def where(self) -> str:
        """Where the weights are: the pinned Hub commit and/or the bundled copy."""
        parts = [f"hf-hub:{self.repo_id}@{self.revision[:7]}"] if self.is_published else []
        if self.bundled:
            parts.append("bundled" if parts else "bundled (unpublished)")
        return " + ".join(parts)

    def report_location(self) -> str | None:
        """Where the report this entry backs can be read: its URL, or the report's file as shipped
        inside the installed package (``achilles/reports/``, package data) or, in a checkout, in
        the repository; None when the entry names no report or it is nowhere to be found."""
        return report_location(self.report) if self.report else None

    def headline_text(self) -> str:
        h = self.headline or {}
        if not isinstance(h.get("value"), (int, float)):
            return ""
        return f"{h.get('split')} {h.get('metric')} {h['value']:.4g}"


# -- reports ----------------------------------------------------------------------------
#: where reports live in the repository; the wheel ships that folder as ``achilles.reports``
REPORTS_DIR = "examples/reports"


def report_location(report: str) -> str | None:
    """A report an entry backs, reachable from here: a URL as is; a repository path
    (a recipe's report.md under examples/reports) as the file inside the installed package, or in the
    checkout achilles runs from; None when neither has it."""
    if "://" in report:
        return report
    path = Path(report)
    if path.is_absolute():
        return str(path) if path.is_file() else None
    relative = path.as_posix()
    candidates = []
    if relative.startswith(REPORTS_DIR + "/"):
        from importlib.util import find_spec

        try:  # a folder of data, not code: a namespace package, so its folder(s) and not files()
            spec = find_spec("achilles.reports")
        except (ModuleNotFoundError, ValueError):
            spec = None  # an editable install made before achilles.reports existed
        for folder in (spec.submodule_search_locations or []) if spec is not None else []:
            candidates.append(Path(folder) / relative[len(REPORTS_DIR) + 1:])
    candidates.append(registry_path().parent.parent / relative)  # a checkout: the repository's root
    for candidate in candidates:
        if candidate.is_file():
            return str(candidate.resolve())
    return None


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
    if (not isinstance(data, dict) or data.get("format") not in (REGISTRY_FORMAT, REGISTRY_FORMAT_V1)
            or not isinstance(data.get("entries"), list)):
        raise CheckpointError(f"zoo index {path} is not an achilles zoo index (format {REGISTRY_FORMAT!r} with "
                              "an 'entries' list expected)")
    return data


def write_entry(entry: ZooEntry, path: str | Path | None = None) -> None:
    """Add ``entry`` to the index file, or replace the entry with its id; one atomic write."""
    path = Path(path) if path is not None else registry_path()
    data = read_registry(path)
    entries = [e for e in data["entries"] if e.get("id") != entry.id] + [entry.to_dict()]
    data["format"] = REGISTRY_FORMAT
    data["entries"] = sorted(entries, key=lambda e: e.get("id", ""))
    atomic_write_json(path, data)


@dataclass
class ZooIndex:
    entries: dict[str, ZooEntry]
    problems: list[str]  # plugin entries skipped, and why


def first_party_entries(path: Path | None = None) -> dict[str, ZooEntry]:
    """The entries of the index file, validated."""
    path = path or registry_path()
    entries: dict[str, ZooEntry] = {}
    for i, raw in enumerate(read_registry(path)["entries"]):
        try:
            entry = ZooEntry.from_dict(raw)
        except (ValueError, TypeError, AttributeError) as exc:
            raise CheckpointError(f"zoo index {path}: entry {i + 1} is invalid ({exc})") from None
        if entry.id in entries:
            raise CheckpointError(f"zoo index {path}: id {entry.id!r} is listed twice")
        entries[entry.id] = entry
    return entries


def zoo_index() -> ZooIndex:
    """First-party entries from the index file, then plugin entries (an id is never shadowed)."""
    from achilles.contract.loader import get_state

    entries = first_party_entries()
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


def list_pretrained(filter: str = "") -> list[str]:
    """Zoo ids (timm's ``list_pretrained``): ``list_pretrained("mamba2*")``."""
    return [entry.id for entry in list_zoo(filter)]


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


def _zoo_entries_or_none() -> dict[str, ZooEntry] | None:
    try:
        return zoo_index().entries
    except CheckpointError:  # a broken index must not stop a local folder from loading
        return None


