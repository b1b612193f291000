"""Which installed distribution provides a task or an architecture: recorded in every run folder,
so that loading a run whose plugin is missing says what to install."""

from __future__ import annotations

from typing import Any

from .errors import UnknownNameError
from .plugin_manager import get_state

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
        source = (config.get("provided_by") or {}).get(key) or {}
        dist = source.get("distribution")
        if isinstance(dist, str) and dist not in ("?", "(in-process)"):
            version = source.get("version")
            pin = f"=={version}" if isinstance(version, str) and version not in ("", "?") else ""
            error.args = (f"this run needs {kind} {name!r}, provided by {dist} {version or ''} when it was "
                          f"trained, which is not loaded here: pip install '{dist}{pin}' (and, if ACHILLES_PLUGINS "
                          f"is set, add {dist} to it)",)
        raise error
