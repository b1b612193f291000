"""Loads plugins from the ``achilles`` entry-point group and fills the registries.

A plugin that fails to import or to register is reported once (which plugin,
what error) and skipped; its partial registrations are rolled back.

``ACHILLES_PLUGINS`` restricts loading to a comma-separated allow-list of
entry-point names or distribution names (``ACHILLES_PLUGINS=achilles`` loads
only the first-party plugins; an empty value loads none).
"""

from __future__ import annotations

import importlib.metadata as md
import os
import sys
import threading
from dataclasses import dataclass, field
from typing import Any

import pluggy

from . import hookspecs
from .components import ComponentRegistry

ENTRY_POINT_GROUP = "achilles"
#: the distribution recorded for a plugin registered with ``register_plugin`` (not installed)
IN_PROCESS = "(in-process)"
ALLOW_LIST_ENV = "ACHILLES_PLUGINS"

_KINDS = {  # hook name -> registry kind
    "register_tasks": "task",
    "register_architectures": "architecture",
    "register_probes": "probe",
    "register_recipes": "recipe",
}


@dataclass
class PluginInfo:
    name: str
    distribution: str
    version: str
    module: str
    registered: dict[str, list[str]] = field(default_factory=dict)


@dataclass
class PluginFailure:
    name: str
    stage: str  # "import" or the hook that raised
    error: str


class PluginState:
    """Everything loaded: the pluggy manager, the registries and a per-plugin report."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager("achilles")
        self.pm.add_hookspecs(hookspecs)
        self.registries = {kind: ComponentRegistry(kind) for kind in _KINDS.values()}
        self.zoo_entries: list[dict[str, Any]] = []
        self.plugins: dict[str, PluginInfo] = {}
        self.failures: list[PluginFailure] = []

    # -- loading -------------------------------------------------------------------
    def load_entry_points(self) -> None:
        allow = _allow_list()
        for ep in sorted(md.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
            dist = ep.dist.name if ep.dist is not None else "?"
            if allow is not None and ep.name not in allow and dist not in allow:
                continue
            name = ep.name if dist in ("achilles", "?") else f"{dist}:{ep.name}"
            if name in self.plugins:
                continue  # the same distribution seen twice on sys.path
            try:
                module = ep.load()
            except Exception as exc:  # any import error must not take the tool down
                self.report_failure(name, "import", exc)
                continue
            version = ep.dist.version if ep.dist is not None else "?"
            self.add_plugin(module, name, distribution=dist, version=version)

    def add_plugin(self, plugin: Any, name: str, distribution: str = IN_PROCESS,
                   version: str = "") -> bool:
        """Register one plugin object (module or class instance) and run its hooks."""
        try:
            self.pm.register(plugin, name=name)
        except Exception as exc:
            self.report_failure(name, "register", exc)
            return False
        info = PluginInfo(name, distribution, version, getattr(plugin, "__name__", type(plugin).__name__))
        self.plugins[name] = info
        for hook_name, kind in _KINDS.items():
            for impl in getattr(self.pm.hook, hook_name).get_hookimpls():
                if impl.plugin_name != name:
                    continue
                registry = self.registries[kind]

                def register(comp_name, factory, description=None, _r=registry, _k=kind, **extra):
                    _r.add(comp_name, factory, plugin=name, description=description, **extra)
                    info.registered.setdefault(_k, []).append(comp_name)

                try:
                    impl.function(register=register)
                except Exception as exc:
                    self.rollback(name)
                    self.report_failure(name, hook_name, exc)
                    return False
        for impl in self.pm.hook.register_zoo_entries.get_hookimpls():
            if impl.plugin_name != name:
                continue
            entries: list[dict] = []
            try:
                impl.function(register=lambda entry: entries.append({**entry, "plugin": name}))
            except Exception as exc:
                self.rollback(name)
                self.report_failure(name, "register_zoo_entries", exc)
                return False
            self.zoo_entries.extend(entries)
            info.registered.setdefault("zoo", []).extend(e.get("id", "?") for e in entries)
        return True

    def rollback(self, name: str) -> None:
        """Forget everything plugin ``name`` registered, and the plugin itself."""
        for registry in self.registries.values():
            registry.remove_plugin(name)
        self.zoo_entries = [e for e in self.zoo_entries if e.get("plugin") != name]
        self.plugins.pop(name, None)
        if self.pm.is_registered(self.pm.get_plugin(name)):
            self.pm.unregister(name=name)

    def report_failure(self, name: str, stage: str, exc: BaseException) -> None:
        """Record that plugin ``name`` failed at ``stage`` and warn once on stderr."""
        error = f"{type(exc).__name__}: {exc}"
        self.failures.append(PluginFailure(name, stage, error))
        # Reported once, when loading; `achilles plugins` lists failures again on request.
        print(f"achilles: warning: plugin {name!r} skipped ({stage} failed: {error})", file=sys.stderr)


def _allow_list() -> set[str] | None:
    value = os.environ.get(ALLOW_LIST_ENV)
    if value is None:
        return None
    return {part.strip() for part in value.split(",") if part.strip()}


_state: PluginState | None = None
_lock = threading.Lock()


def get_state() -> PluginState:
    """The loaded plugin state, loading entry points on first use."""
    global _state
    with _lock:
        if _state is None:
            state = PluginState()
            state.load_entry_points()
            _state = state
        return _state


def reload_plugins() -> PluginState:
    """Forget everything loaded and load again (after installing a plugin, or in tests)."""
    global _state
    with _lock:
        _state = None
    return get_state()


def register_plugin(plugin: Any, name: str | None = None) -> bool:
    """Register an in-process plugin (a module or object with hookimpls) without packaging it."""
    name = name or getattr(plugin, "__name__", None) or type(plugin).__name__
    return get_state().add_plugin(plugin, name)


def unregister_plugin(name: str) -> None:
    get_state().rollback(name)
