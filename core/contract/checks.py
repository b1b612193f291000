"""Checks of the plugin contract (docs/plugins.md) at the places achilles relies on it, so that a
plugin's mistake is reported as what its author must fix, not as the user's setting or an
internal error."""

from __future__ import annotations

import inspect
from typing import Any, Callable

from achilles.errors import PluginError

#: the settings achilles passes to every architecture factory it trains (from the task)
PASSED_TO_EVERY_ARCHITECTURE = ("vocab_size", "max_len")
#: the settings every architecture factory must accept, each with a default (achilles.ModelConfig's):
#: the task sets the first two, the CLI flags, sweep grids and task model_defaults the others
ARCHITECTURE_SETTINGS = ("vocab_size", "max_len", "n_layers", "d_model", "gamma", "backend")
DOCS = "docs/plugins.md"


def _owner(kind: str, name: str) -> str:
    from achilles.contract.loader import get_state

    state = get_state()
    try:
        plugin = state.registries[kind].get(name).plugin
    except Exception:
        return f"{kind} {name!r}"
    info = state.plugins.get(plugin)
    dist = f", {info.distribution} {info.version}".rstrip() if info and info.distribution != "(in-process)" else ""
    return f"{kind} {name!r} (plugin {plugin!r}{dist})"


def _accepts(factory: Callable, setting: str) -> bool:
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return True  # unreadable: let the call say
    return setting in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def check_architecture_accepts(arch: str, factory: Callable, settings: dict[str, Any]) -> None:
    """Before achilles calls ``factory(**settings)``: one of the settings every architecture must
    accept, which the factory does not take, is the plugin's mistake (not the user's setting)."""
    for setting in ARCHITECTURE_SETTINGS:
        if setting in settings and not _accepts(factory, setting):
            passed = ("which achilles passes to every architecture factory" if setting in PASSED_TO_EVERY_ARCHITECTURE
                      else "which every architecture factory must accept")
            raise PluginError(f"{_owner('architecture', arch)} does not accept {setting!r}, {passed}; the plugin "
                              f"must take it as a keyword argument with a default (see {DOCS}, Architectures)")


def check_model(arch: str, model: Any) -> None:
    """After a factory returned: a torch module with a ``config`` dict that rebuilds it."""
    import torch

    if not isinstance(model, torch.nn.Module):
        raise PluginError(f"{_owner('architecture', arch)} returned {type(model).__name__}, not a torch module "
                          f"(an achilles.HookedModel); the plugin must return one (see {DOCS}, Architectures)")
    if not isinstance(getattr(model, "config", None), dict):
        raise PluginError(f"{_owner('architecture', arch)} built a model without a `config` dict; the plugin must set "
                          f"model.config to the settings that rebuild it with create_model (see {DOCS}, Architectures)")


def check_task(name: str, task: Any) -> None:
    """After a task class was instantiated: it keeps its settings in ``config``."""
    if not isinstance(getattr(task, "config", None), dict):
        raise PluginError(f"{_owner('task', name)} has no `config` dict of its settings; the plugin must call "
                          f"super().__init__(**settings) in its __init__ (see {DOCS}, Tasks)")


def check_probe_result(name: str, result: Any) -> dict:
    """What ``Probe.run`` returned: a JSON-able dict (``headline``, ``table``, ``what``, ...)."""
    if not isinstance(result, dict):
        raise PluginError(f"{_owner('probe', name)} returned {type(result).__name__} from run(), not a dict; the plugin "
                          f"must return its summary as a dict (see {DOCS}, Probes)")
    return result
