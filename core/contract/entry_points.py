"""Which plugins are installed: the ``achilles`` entry-point group of every distribution, the
``ACHILLES_PLUGINS`` allow-list, and achilles' own distribution, so that nothing installed can pass
for achilles' own plugins (an impostor is named in a warning and its entry points ignored)."""

from __future__ import annotations

import importlib.metadata as md
import os
import re
import sys
from pathlib import Path
from typing import Any

ENTRY_POINT_GROUP = "achilles"
ALLOW_LIST_ENV = "ACHILLES_PLUGINS"
FIRST_PARTY = "achilles"  # the distribution whose achilles.plugins.* modules are first-party
#: achilles' own plugins: the modules achilles.plugins.NAME, loaded by module (never through entry points)
FIRST_PARTY_PLUGINS = ("tasks", "archs", "probes", "recipes")


def _entry_points() -> list[md.EntryPoint]:
    """Every distribution's entry points of the group. Not ``md.entry_points()``: it keeps only the
    first distribution of each name on sys.path, so a stray one called "achilles" would hide
    achilles' own plugins."""
    seen, out = set(), []
    for dist in md.distributions():
        try:
            eps = [ep for ep in dist.entry_points if ep.group == ENTRY_POINT_GROUP]
            # the name only where needed: parsing METADATA of every installed package is most of a TAB's time
            name = canonical_name(dist.metadata["Name"] or "?") if eps else ""
        except Exception:  # a broken metadata folder must not take the tool down
            continue
        for ep in eps:
            if (name, ep.name, ep.value) not in seen:
                seen.add((name, ep.name, ep.value))
                out.append(ep)
    return out


def canonical_name(name: str) -> str:
    """A distribution name as pip compares them (PEP 503): ``Achilles_Example.Plugin`` ->
    ``achilles-example-plugin``."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _dist_name(ep: md.EntryPoint) -> str:
    return canonical_name(ep.dist.name) if ep.dist is not None else "?"


def _reaches_first_party(ep: md.EntryPoint) -> bool:
    """An entry point never loaded as a plugin: one of a distribution called achilles (the real
    one's plugins are loaded by module; any other is an impostor), or one into achilles' own
    modules (``achilles`` or ``achilles.*``)."""
    module = ep.value.partition(":")[0].strip()
    return _dist_name(ep) == FIRST_PARTY or module == FIRST_PARTY or module.startswith(f"{FIRST_PARTY}.")


def _dist_path(dist: Any) -> str:
    path = getattr(dist, "_path", None)
    return str(path) if path is not None else "?"


def _describe_dist(ep: md.EntryPoint) -> str:
    version = ep.dist.version if ep.dist is not None else "?"
    return f"distribution {_dist_name(ep)!r} {version} ({_dist_path(ep.dist)})"


def _may_be_named(dist: Any, name: str) -> bool:
    """False only when the metadata folder's own name rules ``name`` out (``foo-1.0.dist-info``),
    which spares parsing METADATA for every installed package; True when the folder is unknown."""
    path = getattr(dist, "_path", None)
    if path is None:
        return True
    return canonical_name(Path(str(path)).name).startswith(name)


def _own_distribution() -> Any:
    """The achilles distribution this package was installed by: a ``achilles`` dist-info in the
    folder that holds the imported package, or whose editable-install finder maps to it. None when
    running from a source tree."""
    package = Path(__file__).resolve().parent.parent  # achilles' package folder (this file is in contract/)
    for dist in md.distributions():
        try:
            if not _may_be_named(dist, FIRST_PARTY):
                continue
            if canonical_name(dist.metadata["Name"] or "?") != FIRST_PARTY:
                continue
            folder = Path(str(dist.locate_file(""))).resolve()
            if package.parent == folder and package.name == FIRST_PARTY:
                return dist
            for file in dist.files or []:
                if file.name.startswith("__editable__") and file.name.endswith("_finder.py"):
                    located = Path(str(dist.locate_file(file)))
                    if located.is_file() and repr(str(package)) in located.read_text(errors="replace"):
                        return dist
        except Exception:  # a broken metadata folder is no achilles
            continue
    return None


def _warn_impostors(entry_points: list[md.EntryPoint], own: Any) -> None:
    """Name every distribution that passes for achilles: another dist-info called achilles, or a
    distribution declaring entry points into achilles' own modules. Their entry points are skipped."""
    own_path = _dist_path(own) if own is not None else None
    source_tree = Path(__file__).resolve().parent.parent.parent  # where achilles' package folder lies
    named: set[str] = set()
    for ep in entry_points:
        if not _reaches_first_party(ep) or ep.dist is None:
            continue
        path = _dist_path(ep.dist)
        if path == own_path or path in named:
            continue
        if _dist_name(ep) == FIRST_PARTY and path != "?" and Path(path).resolve().parent == source_tree:
            continue  # the metadata beside achilles' own package (a source tree's achilles.egg-info)
        named.add(path)
        what = ("calls itself achilles but is not the installed achilles" if _dist_name(ep) == FIRST_PARTY
                else "declares entry points into achilles' own modules")
        print(f"achilles: warning: {_describe_dist(ep)} {what}; its entry points are ignored (achilles loads its "
              f"own plugins from its package)", file=sys.stderr)


def _is_first_party_module(module: Any) -> bool:
    file = getattr(module, "__file__", None)
    if not file:
        return False
    import importlib.util

    spec = importlib.util.find_spec(f"{FIRST_PARTY}.plugins")  # where it lies; core imports no plugin
    if spec is None or not spec.submodule_search_locations:
        return False
    roots = [Path(location).resolve() for location in spec.submodule_search_locations]
    return any(Path(file).resolve().is_relative_to(root) for root in roots)


def _allow_list() -> set[str] | None:
    value = os.environ.get(ALLOW_LIST_ENV)
    if value is None:
        return None
    items = set()
    for part in value.split(","):
        dist, sep, ep = part.strip().partition(":")
        if dist:
            items.add(canonical_name(dist) + (f":{ep.strip()}" if sep else ""))
    return items


def _allowed(allow: set[str], ep: md.EntryPoint) -> bool:
    """Whether third-party entry point ``ep`` is allowed (achilles' own plugins always load)."""
    dist = _dist_name(ep)
    return dist != FIRST_PARTY and (f"{dist}:{ep.name}" in allow or dist in allow)


def _warn_unmatched(allow: set[str], entry_points: list[md.EntryPoint]) -> None:
    """Say so when an allow-list item names no installed distribution (an entry-point name, a typo)."""
    dists = {_dist_name(ep) for ep in entry_points} | {FIRST_PARTY}
    for item in sorted(allow):
        dist = item.partition(":")[0]
        if dist in dists:
            continue
        owners = sorted({_dist_name(ep) for ep in entry_points if ep.name == item} - {FIRST_PARTY})
        hint = (f" (it is an entry point of {', '.join(owners)}: write {owners[0]} or {owners[0]}:{item})"
                if owners else " (achilles' own plugins always load; it lists third-party distributions)"
                if item in FIRST_PARTY_PLUGINS else "")
        print(f"achilles: warning: {ALLOW_LIST_ENV} names {item!r}, which is no installed distribution with "
              f"achilles plugins{hint}", file=sys.stderr)
