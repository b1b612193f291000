"""Which installed distribution provides a task or an architecture: recorded in every run folder,
so that loading a run whose plugin is missing says what to install."""

from __future__ import annotations

import re
from typing import Any

from achilles.errors import UnknownNameError
from achilles.contract.loader import get_state

_RECORD_KEYS = {"task": "task", "architecture": "arch"}


def provenance(kind: str, name: str) -> dict[str, str]:
    """``{"plugin", "distribution", "version"}`` of the plugin that registered ``name``."""
    state = get_state()
    plugin = state.registries[kind].get(name).plugin
    info = state.plugins.get(plugin)
    return {"plugin": plugin, "distribution": info.distribution if info else "?",
            "version": info.version if info else "?"}


def run_provenance(arch: str, task: str) -> dict[str, dict[str, str]]:
    """What a run record keeps under ``provided_by``."""
    return {"arch": provenance("architecture", arch), "task": provenance("task", task)}


def require_components(config: dict[str, Any], kinds: tuple[str, ...] = ("task", "architecture")) -> None:
    """Refuse a run whose task or architecture is not registered, saying which distribution
    (and version) provided it when the run was trained."""
    registries = get_state().registries
    for kind, key in _RECORD_KEYS.items():
        if kind not in kinds:
            continue
        name = config.get(key)
        if name in registries[kind]:
            continue
        error = UnknownNameError(kind, str(name), registries[kind].names())
        provided = config.get("provided_by")
        source = provided.get(key) if isinstance(provided, dict) else None
        source = source if isinstance(source, dict) else {}
        dist, version = source.get("distribution"), source.get("version")
        if isinstance(dist, str) and dist not in ("?", "(in-process)"):
            # Text from a run record is data: it reaches a command only once validated (PEP 508
            # name, PEP 440 version); anything else is named by its field, never printed to run.
            if not valid_distribution_name(dist):
                error.args = (f"this run needs {kind} {name!r}, which is not loaded here; the run record's "
                              f"provided_by.{key}.distribution field holds an invalid distribution name, so it "
                              "does not say what to install",)
            else:
                pin = f"=={version}" if valid_version(version) else ""
                unknown = "" if pin or version in (None, "", "?") else " (its recorded version is invalid)"
                error.args = (f"this run needs {kind} {name!r}, provided by the distribution {dist!r}"
                              f"{f' version {version}' if pin else ''} when it was trained, which is not loaded "
                              f"here{unknown}: pip install '{dist}{pin}' (and, if ACHILLES_PLUGINS is set, add "
                              f"{dist} to it)",)
        raise error


#: a distribution name as PEP 508 allows it
_DISTRIBUTION_NAME = re.compile(r"^([A-Z0-9]|[A-Z0-9][A-Z0-9._-]*[A-Z0-9])$", re.IGNORECASE)


def valid_distribution_name(name: Any) -> bool:
    return isinstance(name, str) and len(name) <= 200 and bool(_DISTRIBUTION_NAME.match(name))


#: a PEP 440 version (its appendix's pattern), nothing around it
_VERSION = re.compile(r"""
    v?(?:(?:[0-9]+!)?[0-9]+(?:\.[0-9]+)*
    (?:[-_.]?(?:alpha|a|beta|b|preview|pre|c|rc)[-_.]?[0-9]*)?
    (?:-[0-9]+|[-_.]?(?:post|rev|r)[-_.]?[0-9]*)?
    (?:[-_.]?dev[-_.]?[0-9]*)?)
    (?:\+[a-z0-9]+(?:[-_.][a-z0-9]+)*)?
""", re.VERBOSE | re.IGNORECASE)


def valid_version(version: Any) -> bool:
    """A PEP 440 version (what may follow ``==`` in a requirement)."""
    return isinstance(version, str) and len(version) <= 100 and bool(_VERSION.fullmatch(version))
