"""Loads plugins from the ``achilles`` entry-point group and fills the registries.

pluggy calls every hook (``pm.hook.register_tasks(register=...)`` and the others), so a third
party's ``tryfirst``, ``trylast`` and wrappers work; each implementation runs isolated
(``isolation.guard``). A plugin that fails to import or to register is reported once (which plugin,
what error) and skipped; its partial registrations are rolled back. Whatever plugin code raises
(``SystemExit`` and ``KeyboardInterrupt`` included) is the plugin's failure, never the program's;
a real Ctrl-C still interrupts (``isolation._plugin_code``). Which plugins are installed, and
which may load, is ``entry_points.py``'s part.

First-party plugins (the ``achilles`` distribution's own ``achilles.plugins.*`` modules) load
first; a name is owned by whoever registered it first, so a later plugin that registers a taken
name loses that name only (warned, naming both owners) and keeps everything else. Third-party
plugins are named ``DISTRIBUTION:ENTRY-POINT``, so none can pass for a first-party one.

First-party plugins are achilles' own modules (``achilles.plugins.tasks``, ``archs``, ``probes``,
``recipes``), imported by module, never through entry points: a distribution that declares entry
points into ``achilles.*`` or calls itself achilles (a second dist-info) is named in a warning and
its entry points are ignored.

``ACHILLES_PLUGINS`` restricts loading third-party plugins to a comma-separated allow-list of
distributions (``ACHILLES_PLUGINS=achilles`` or an empty value: achilles' own plugins only, which
always load); ``DISTRIBUTION:ENTRY-POINT`` allows one entry point of a distribution.

Loading has two steps: import and register every plugin with pluggy, then run the registration
hooks that fill the registries. ``get_state()`` does both; the CLI does the first alone to find
plugin commands (``--help``, completion), so those import no torch through the first-party plugins.
"""

from __future__ import annotations

import sys
import threading
from dataclasses import dataclass, field
from typing import Any

import pluggy

from achilles.contract import hookspecs
from achilles.contract.names import ComponentRegistry
from achilles.contract.entry_points import (FIRST_PARTY, FIRST_PARTY_PLUGINS, _allow_list, _allowed, _describe_dist, _dist_name,
                                           _entry_points, _is_first_party_module, _own_distribution,
                                           _reaches_first_party, _warn_impostors, _warn_unmatched)
from achilles.contract.isolation import HookCall, _plugin_code, _UserInterrupt, current_plugin, guard, hook_call

#: the distribution recorded for a plugin registered with ``register_plugin`` (not installed)
IN_PROCESS = "(in-process)"

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
    hooks: list[str] = field(default_factory=list)  # every hook it implements


@dataclass
class PluginFailure:
    name: str
    stage: str  # "import" or the hook that raised
    error: str


@dataclass
class NameConflict:
    """``loser`` registered a ``kind`` name that ``owner`` had already: it lost that name only."""

    kind: str
    name: str
    owner: str
    loser: str


class PluginState:
    """Everything loaded: the pluggy manager, the registries and a per-plugin report."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager("achilles")
        self.pm.add_hookspecs(hookspecs)
        self.registries = {kind: ComponentRegistry(kind) for kind in _KINDS.values()}
        self.zoo_entries: list[dict[str, Any]] = []
        self.plugins: dict[str, PluginInfo] = {}
        self.failures: list[PluginFailure] = []
        self.conflicts: list[NameConflict] = []
        self.pending: list[str] = []  # loaded, registration hooks not yet run (see get_state)

    # -- loading -------------------------------------------------------------------
    def load_entry_points(self, components: bool = True) -> None:
        """Load achilles' own plugins from its own modules, then every allowed third-party entry
        point; run their registration hooks now, or (``components=False``) later, in
        ``register_pending()``."""
        import importlib

        allow = _allow_list()
        entry_points = _entry_points()
        if allow is not None:
            _warn_unmatched(allow, entry_points)
        own = _own_distribution()
        _warn_impostors(entry_points, own)
        # First-party: imported by module from the installed package, always, always first, whatever
        # any entry-point metadata says (ACHILLES_PLUGINS filters third parties only).
        first_party_modules = []
        for name in FIRST_PARTY_PLUGINS:
            try:
                with _plugin_code():
                    module = importlib.import_module(f"{FIRST_PARTY}.plugins.{name}")
            except _UserInterrupt:
                raise
            except BaseException as exc:  # noqa: B036 (see _plugin_code)
                self.report_failure(name, "import", exc)
                continue
            first_party_modules.append(module)
            self.add_plugin(module, name, distribution=FIRST_PARTY, version=own.version if own else "?",
                            components=components)
        # Third parties by distribution and name; none into achilles' own modules (see _warn_impostors).
        order = sorted((ep for ep in entry_points if not _reaches_first_party(ep)),
                       key=lambda e: (_dist_name(e), e.name))
        for ep in order:
            dist = _dist_name(ep)
            if allow is not None and not _allowed(allow, ep):
                continue
            name = f"{dist}:{ep.name}"
            if name in self.plugins:
                continue  # the same distribution seen twice on sys.path
            try:
                with _plugin_code():
                    module = ep.load()
            except _UserInterrupt:
                raise
            except BaseException as exc:  # noqa: B036 (see _plugin_code): plugin code never takes the tool down
                self.report_failure(name, "import", exc)
                continue
            if any(module is m for m in first_party_modules) or _is_first_party_module(module):
                print(f"achilles: warning: {_describe_dist(ep)} entry point {ep.name!r} resolves to achilles' own "
                      f"module {getattr(module, '__name__', '?')!r}; skipped (achilles loads its own plugins itself)",
                      file=sys.stderr)
                continue
            version = ep.dist.version if ep.dist is not None else "?"
            self.add_plugin(module, name, distribution=dist, version=version, components=components)

    def add_plugin(self, plugin: Any, name: str, distribution: str = IN_PROCESS,
                   version: str = "", components: bool = True) -> bool:
        """Register one plugin object (module or class instance) and run its registration hooks
        (``components=False``: leave them to ``register_pending()``)."""
        try:
            with _plugin_code():
                self.pm.register(plugin, name=name)
        except _UserInterrupt:
            raise
        except BaseException as exc:  # noqa: B036 (see _plugin_code)
            self.report_failure(name, "register", exc)
            return False
        callers = self.pm.get_hookcallers(plugin) or []
        for caller in callers:
            for impl in caller.get_hookimpls():
                if impl.plugin_name == name:
                    guard(name, impl)  # pluggy calls it; a failure is this plugin's alone
        self.plugins[name] = PluginInfo(name, distribution, version, getattr(plugin, "__name__", type(plugin).__name__),
                                        hooks=sorted(caller.name for caller in callers))
        if not components:
            self.pending.append(name)
            return True
        return self.register_components([name])

    def register_pending(self) -> None:
        """Run the registration hooks of the plugins loaded with ``components=False``."""
        names, self.pending = self.pending, []
        if names:
            self.register_components(names)

    def register_components(self, names: list[str]) -> bool:
        """Call the registration hooks (tasks, architectures, probes, recipes, zoo entries) through
        pluggy for the plugins ``names``: their ``tryfirst``, ``trylast`` and wrappers order the
        calls. A name goes to the first plugin that registers it, achilles' own plugins before any
        other; a plugin that raises is rolled back and reported. Returns whether all registered."""
        call = HookCall(only=set(names))
        for hook_name, kind in (*_KINDS.items(), ("register_zoo_entries", "zoo")):
            made: list[tuple[str, tuple, dict]] = []
            with hook_call(call):
                getattr(self.pm.hook, hook_name)(register=lambda *a, **k: made.append((current_plugin() or "?", a, k)))
            for plugin, exc in call.failures:
                if plugin in self.plugins:
                    self.rollback(plugin)
                    self.report_failure(plugin, hook_name, exc)
            made.sort(key=lambda m: m[0] not in FIRST_PARTY_PLUGINS)  # stable: pluggy's order otherwise
            for plugin, args, kwargs in made:
                if call.failed(plugin):
                    continue
                if kind == "zoo":
                    entry = args[0] if args else kwargs.get("entry")
                    self.zoo_entries.append({**entry, "plugin": plugin})
                    self.plugins[plugin].registered.setdefault("zoo", []).append(entry.get("id", "?"))
                else:
                    self._register(kind, plugin, *args, **kwargs)
        return not any(call.failed(name) for name in names)

    def _register(self, kind: str, plugin: str, name: Any, factory: Any, description: str | None = None,
                  **extra: Any) -> None:
        registry = self.registries[kind]
        if isinstance(name, str) and name in registry:
            self._conflict(kind, name, owner=registry.get(name).plugin, loser=plugin)
            return  # the name stays its first owner's; the rest of this plugin loads
        registry.add(name, factory, plugin=plugin, description=description, **extra)
        self.plugins[plugin].registered.setdefault(kind, []).append(name)

    def rollback(self, name: str) -> None:
        """Forget everything plugin ``name`` registered, and the plugin itself."""
        for registry in self.registries.values():
            registry.remove_plugin(name)
        self.zoo_entries = [e for e in self.zoo_entries if e.get("plugin") != name]
        self.plugins.pop(name, None)
        if name in self.pending:
            self.pending.remove(name)
        if self.pm.is_registered(self.pm.get_plugin(name)):
            self.pm.unregister(name=name)

    def _describe(self, plugin: str) -> str:
        info = self.plugins.get(plugin)
        if info is None or info.distribution in (IN_PROCESS, "?"):
            return repr(plugin)
        return f"{plugin!r} ({info.distribution} {info.version})".replace(" )", ")")

    def _conflict(self, kind: str, name: str, owner: str, loser: str) -> None:
        self.conflicts.append(NameConflict(kind, name, owner, loser))
        whose = "itself, earlier" if owner == loser else f"plugin {self._describe(owner)}"
        print(f"achilles: warning: plugin {self._describe(loser)} cannot register {kind} {name!r}: it is "
              f"already registered by {whose}; {loser}'s {name!r} is skipped, the rest of it loads", file=sys.stderr)

    def report_failure(self, name: str, stage: str, exc: BaseException) -> None:
        """Record that plugin ``name`` failed at ``stage`` and warn once on stderr."""
        error = f"{type(exc).__name__}: {exc}"
        self.failures.append(PluginFailure(name, stage, error))
        # Reported once, when loading; `achilles plugins` lists failures again on request.
        print(f"achilles: warning: plugin {name!r} skipped ({stage} failed: {error})", file=sys.stderr)


_state: PluginState | None = None
_lock = threading.Lock()


def get_state(components: bool = True) -> PluginState:
    """The loaded plugin state, loading entry points on first use. ``components=False`` imports
    and registers the plugins without running their registration hooks (which import what the
    components need, torch for the first-party ones): the CLI finds plugin commands this way."""
    global _state
    with _lock:
        if _state is None:
            state = PluginState()
            state.load_entry_points(components=False)
            _state = state
        if components:
            _state.register_pending()
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


