"""Shell completion of component names (architectures, tasks, probes, recipes) and zoo ids,
without importing torch: a TAB must answer in a fraction of a second.

The registries themselves cannot answer that fast: the first-party plugins' registration hooks
import every architecture module, hence torch. So completion takes

- the first-party names from ``registry/first_party_names.json`` (:data:`FIRST_PARTY_NAMES`;
  ``tests/test_completion.py`` checks the list against the registries: a new first-party
  component must be added there);
- a third-party plugin's names by running its registration hooks once with a ``register`` that
  only records the name (nothing is created), kept in a cache file until the installed plugins
  change (:func:`third_party_names`). A plugin whose entry-point module imports torch at the top
  makes every TAB and ``achilles --help`` pay for it: ``docs/plugins.md`` ("Keep the plugin
  light") says how to avoid that;
- zoo ids from the index file (``achilles.registry``) and the plugins' ``register_zoo_entries``.

A plugin that fails here is skipped silently: completion never prints an error into a shell.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable

#: hook -> the kind of name it registers
HOOKS = {"register_architectures": "architecture", "register_tasks": "task", "register_probes": "probe",
         "register_recipes": "recipe"}

#: the names achilles' own plugins register, by kind: a data file beside the zoo index (core names no
#: plugin), kept equal to the registries by a test
def _first_party_names() -> dict[str, tuple[str, ...]]:
    from achilles.registry import REGISTRY_FILE  # the packaged data folder (never a test's zoo override)

    data = json.loads((REGISTRY_FILE.parent / "first_party_names.json").read_text())
    return {kind: tuple(names) for kind, names in data["names"].items()}


FIRST_PARTY_NAMES: dict[str, tuple[str, ...]] = _first_party_names()


def cache_file() -> Path:
    """Where the third-party plugins' names are kept between TABs."""
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(root) / "achilles" / "completion-names.json"


def _plugin_key(state: Any) -> list:
    """What the cached names depend on: each third-party plugin's distribution, version and module
    file (its modification time: an editable install's edits count)."""
    from achilles import __version__
    from achilles.contract.entry_points import FIRST_PARTY

    key: list = [__version__, os.environ.get("ACHILLES_PLUGINS")]
    for name, info in sorted(state.plugins.items()):
        if info.distribution == FIRST_PARTY:
            continue
        plugin = state.pm.get_plugin(name)
        path = getattr(plugin, "__file__", None) or ""
        try:
            mtime = os.stat(path).st_mtime_ns if path else 0
        except OSError:
            mtime = 0
        key.append([name, info.distribution, info.version, path, mtime])
    return key


def third_party_names() -> dict[str, list[str]]:
    """The names the third-party plugins register, by kind (``zoo`` for zoo ids). Their
    registration hooks run once, with a ``register`` that records names only (a plugin's hook may
    import torch: the first TAB after installing or changing a plugin pays for it), and the result
    is kept in :func:`cache_file` until the set of plugins changes."""
    from achilles.contract.entry_points import FIRST_PARTY
    from achilles.contract.loader import get_state

    state = get_state(components=False)  # imports the plugin modules, runs no registration hook
    key = _plugin_key(state)
    if len(key) == 2:  # no third-party plugin
        return {}
    file = cache_file()
    try:
        cached = json.loads(file.read_text())
        if cached.get("key") == key:
            return {k: list(v) for k, v in cached["names"].items()}
    except (OSError, ValueError, AttributeError, KeyError, TypeError):
        pass
    from achilles.contract.isolation import HookCall, hook_call

    third_parties = {name for name, info in state.plugins.items() if info.distribution != FIRST_PARTY}
    names: dict[str, set[str]] = {}
    for hook_name, kind in {**HOOKS, "register_zoo_entries": "zoo"}.items():
        found: list[Any] = []
        record = ((lambda entry: found.append(entry.get("id") if isinstance(entry, dict) else None))
                  if kind == "zoo" else (lambda name, *args, **kwargs: found.append(name)))
        with hook_call(HookCall(only=third_parties)):  # a broken plugin must not break a TAB: its failure is kept
            getattr(state.pm.hook, hook_name)(register=record)
        names.setdefault(kind, set()).update(n for n in found if isinstance(n, str))
    out = {k: sorted(v) for k, v in names.items()}
    try:  # best effort: a read-only home only makes the next TAB as slow as this one
        file.parent.mkdir(parents=True, exist_ok=True)
        tmp = file.with_name(f".{file.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"key": key, "names": out}))
        os.replace(tmp, file)
    except OSError:
        pass
    return out


def component_names(kind: str) -> list[str]:
    """Every name of ``kind`` (``architecture``, ``task``, ``probe``, ``recipe``), sorted."""
    return sorted(set(FIRST_PARTY_NAMES.get(kind, ())) | set(third_party_names().get(kind, ())))


def zoo_ids() -> list[str]:
    """The zoo's ids: the index file's and the plugins' (``register_zoo_entries``), sorted."""
    from achilles.registry import registry_path

    ids: set[str] = set()
    try:
        data = json.loads(registry_path().read_text())
        ids.update(e["id"] for e in data.get("entries", []) if isinstance(e, dict) and isinstance(e.get("id"), str))
    except (OSError, ValueError, AttributeError, TypeError):
        pass
    return sorted(ids | set(third_party_names().get("zoo", ())))


def _items(values: Iterable[str], incomplete: str) -> list:
    from click.shell_completion import CompletionItem

    return [CompletionItem(v) for v in values if v.startswith(incomplete)]


def _complete(kind: str):
    def complete(ctx, param, incomplete: str) -> list:
        try:
            return _items(component_names(kind), incomplete)
        except Exception:  # completion never prints a traceback into a shell
            return []

    complete.__name__ = f"complete_{kind}"
    return complete


complete_arch = _complete("architecture")
complete_task = _complete("task")
complete_probe = _complete("probe")
complete_recipe = _complete("recipe")


def complete_names(kind: str):
    """A ``shell_complete`` for a comma-separated list of names (``--subjects a,b``)."""
    def complete(ctx, param, incomplete: str) -> list:
        head, sep, last = incomplete.rpartition(",")
        try:
            names = component_names(kind)
        except Exception:
            return []
        return _items([f"{head}{sep}{n}" for n in names], incomplete)

    return complete


def complete_zoo_id(ctx, param, incomplete: str) -> list:
    try:
        return _items(zoo_ids(), incomplete)
    except Exception:
        return []


def complete_model(ctx, param, incomplete: str) -> list:
    """A RUN argument: zoo ids, and run folders (the shell's own file completion)."""
    from click.shell_completion import CompletionItem

    items = complete_zoo_id(ctx, param, incomplete)
    return items + [CompletionItem(incomplete, type="dir")]


def complete_list_pattern(ctx, param, incomplete: str) -> list:
    """``achilles list KIND PATTERN``: the names of KIND."""
    kind = {"tasks": "task", "task": "task", "archs": "architecture", "arch": "architecture",
            "architectures": "architecture", "probes": "probe", "probe": "probe"}.get(ctx.params.get("kind") or "")
    kinds = [kind] if kind else ["task", "architecture", "probe"]
    try:
        return _items(sorted({n for k in kinds for n in component_names(k)}), incomplete)
    except Exception:
        return []
