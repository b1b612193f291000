"""Loads plugins from the ``achilles`` entry-point group and fills the registries.

A plugin that fails to import or to register is reported once (which plugin,
what error) and skipped; its partial registrations are rolled back. Whatever plugin code raises
(``SystemExit`` and ``KeyboardInterrupt`` included) is the plugin's failure, never the program's;
a real Ctrl-C still interrupts (see ``_plugin_code``).

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

import importlib.metadata as md
import os
import re
import sys
import threading
from pathlib import Path
from dataclasses import dataclass, field
from typing import Any

import pluggy

from achilles.contract import hookspecs
from achilles.contract.names import ComponentRegistry
from achilles.errors import DuplicateNameError

ENTRY_POINT_GROUP = "achilles"
#: the distribution recorded for a plugin registered with ``register_plugin`` (not installed)
IN_PROCESS = "(in-process)"
ALLOW_LIST_ENV = "ACHILLES_PLUGINS"
FIRST_PARTY = "achilles"  # the distribution whose achilles.plugins.* modules are first-party
#: achilles' own plugins: the modules achilles.plugins.NAME, loaded by module (never through entry points)
FIRST_PARTY_PLUGINS = ("tasks", "archs", "probes", "recipes")

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
        self.plugins[name] = PluginInfo(name, distribution, version, getattr(plugin, "__name__", type(plugin).__name__),
                                        hooks=sorted(caller.name for caller in self.pm.get_hookcallers(plugin) or []))
        if not components:
            self.pending.append(name)
            return True
        return self.register_components(name)

    def register_pending(self) -> None:
        """Run the registration hooks of the plugins loaded with ``components=False``."""
        while self.pending:
            self.register_components(self.pending.pop(0))

    def register_components(self, name: str) -> bool:
        """Run plugin ``name``'s registration hooks (tasks, architectures, probes, zoo entries);
        on an error, roll the plugin back and report it."""
        info = self.plugins[name]
        for hook_name, kind in _KINDS.items():
            for impl in getattr(self.pm.hook, hook_name).get_hookimpls():
                if impl.plugin_name != name:
                    continue
                registry = self.registries[kind]

                def register(comp_name, factory, description=None, _r=registry, _k=kind, **extra):
                    if isinstance(comp_name, str) and comp_name in _r:
                        self._conflict(_k, comp_name, owner=_r.get(comp_name).plugin, loser=name)
                        return  # the name stays its first owner's; the rest of this plugin loads
                    _r.add(comp_name, factory, plugin=name, description=description, **extra)
                    info.registered.setdefault(_k, []).append(comp_name)

                try:
                    with _plugin_code():
                        impl.function(register=register)
                except _UserInterrupt:
                    raise
                except BaseException as exc:  # noqa: B036 (see _plugin_code): SystemExit, KeyboardInterrupt too
                    self.rollback(name)
                    self.report_failure(name, hook_name, exc)
                    return False
        for impl in self.pm.hook.register_zoo_entries.get_hookimpls():
            if impl.plugin_name != name:
                continue
            entries: list[dict] = []
            try:
                with _plugin_code():
                    impl.function(register=lambda entry: entries.append({**entry, "plugin": name}))
            except _UserInterrupt:
                raise
            except BaseException as exc:  # noqa: B036 (see _plugin_code)
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


class _UserInterrupt(KeyboardInterrupt):
    """A real Ctrl-C arriving while plugin code runs (raised into it so that a blocking plugin stops)."""


class _plugin_code:
    """``with _plugin_code(): CALL`` runs plugin code whose every exception the caller catches
    (``except BaseException``: a plugin's ``SystemExit`` or ``KeyboardInterrupt`` must neither end
    the program nor fake its success), while a real Ctrl-C still interrupts. Inside the block (in
    the main thread) SIGINT is noted before it is raised into the plugin's code, so a
    ``KeyboardInterrupt`` without that note is the plugin's own; a Ctrl-C pressed meanwhile is
    delivered when the block ends, whatever the plugin raised or swallowed, as ``_UserInterrupt``
    (a ``KeyboardInterrupt``, which callers re-raise before catching the plugin's exceptions). A
    SIGINT handler of someone else's (not Python's default) is called at once, as if no plugin
    code ran, and what it raises is raised again at the end. SIG_IGN and SIG_DFL are left alone.
    Outside the main thread no signal arrives, so any ``KeyboardInterrupt`` there is the plugin's."""

    def __enter__(self) -> "_plugin_code":
        self.pressed, self.previous, self.forwarded = False, None, None
        if threading.current_thread() is threading.main_thread():
            import signal

            try:
                self.previous = signal.getsignal(signal.SIGINT)
                if callable(self.previous):  # SIG_IGN, SIG_DFL, or installed outside Python: left alone
                    signal.signal(signal.SIGINT, self._on_sigint)
                else:
                    self.previous = None
            except (ValueError, TypeError, OSError):
                self.previous = None
        return self

    def _on_sigint(self, signum: int, frame: Any) -> None:
        import signal

        self.pressed = True
        if self.previous is signal.default_int_handler:
            raise _UserInterrupt()  # stops a plugin that blocks; delivered as a real Ctrl-C on exit, even if swallowed
        try:  # someone else handles Ctrl-C here: theirs, as if no plugin code ran; what it raises is raised again
            self.previous(signum, frame)
        except BaseException as exc:  # noqa: B036
            self.forwarded = exc
            raise

    def __exit__(self, *exc: Any) -> None:
        if self.previous is None:
            return
        import signal

        signal.signal(signal.SIGINT, self.previous)
        if not self.pressed:
            return
        if self.previous is signal.default_int_handler:
            raise _UserInterrupt()  # callers re-raise it (``except _UserInterrupt: raise``)
        if isinstance(self.forwarded, KeyboardInterrupt):  # the earlier handler interrupted: not the plugin's
            raise _UserInterrupt() from self.forwarded
        if self.forwarded is not None:
            raise self.forwarded


def _entry_points() -> list[md.EntryPoint]:
    """Every distribution's entry points of the group. Not ``md.entry_points()``: it keeps only the
    first distribution of each name on sys.path, so a stray one called "achilles" would hide
    achilles' own plugins."""
    seen, out = set(), []
    for dist in md.distributions():
        try:
            name = canonical_name(dist.metadata["Name"] or "?")
            eps = [ep for ep in dist.entry_points if ep.group == ENTRY_POINT_GROUP]
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


def _own_distribution() -> Any:
    """The achilles distribution this package was installed by: a ``achilles`` dist-info in the
    folder that holds the imported package, or whose editable-install finder maps to it. None when
    running from a source tree."""
    package = Path(__file__).resolve().parent.parent  # achilles' package folder (this file is in contract/)
    for dist in md.distributions():
        try:
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


# -- CLI commands -----------------------------------------------------------------------
_attached: dict[str, str] = {}  # command name -> plugin, of the commands attached to the CLI
_attached_for: list = [None]  # the plugin state they came from (attached once per state)


def attach_plugin_commands(cli: Any, builtin: frozenset[str]) -> None:
    """Add the plugins' commands to ``cli``. Each plugin registers into a group of its own, so it
    can neither replace nor remove a built-in command or another plugin's: a taken name is
    skipped with a warning naming both owners."""
    import click

    state = get_state(components=False)  # commands need the plugins, not their components
    if _attached_for[0] is state:
        return
    _attached_for[0] = state
    for name in list(_attached):  # those of an earlier plugin state (after reload_plugins)
        cli.commands.pop(name, None)
    _attached.clear()
    for impl in state.pm.hook.register_commands.get_hookimpls():
        plugin = impl.plugin_name
        staging = click.Group(name=cli.name)
        try:
            with _plugin_code():
                impl.function(cli=staging)
        except _UserInterrupt:
            raise
        except BaseException as exc:  # noqa: B036 (see _plugin_code)
            state.report_failure(plugin, "register_commands", exc)
            continue
        info = state.plugins.get(plugin)
        for name, command in staging.commands.items():
            if name in builtin or name in cli.commands:
                owner = "achilles (built-in)" if name in builtin else _attached.get(name, "another plugin")
                state.conflicts.append(NameConflict("command", name, owner, plugin))
                whose = "a built-in command of achilles" if name in builtin else f"added by plugin {owner!r}"
                print(f"achilles: warning: plugin {state._describe(plugin)} cannot add command {name!r}: it is "
                      f"{whose}; {plugin}'s {name!r} is skipped, the rest of it loads", file=sys.stderr)
                continue
            cli.add_command(command, name)
            _attached[name] = plugin
            if info is not None and name not in info.registered.get("command", []):
                info.registered.setdefault("command", []).append(name)
