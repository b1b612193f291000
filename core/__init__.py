"""achilles: a plugin-based model zoo for where Mamba-style SSMs fail and Transformers don't.

The public names below load on first use (PEP 562), so ``import achilles`` and the commands that
need no model (``achilles --version``, ``--help``, shell completion) do not import torch or
huggingface_hub. ``from achilles import Task`` and ``achilles.Task`` work as ever.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .errors import AchillesError, CheckpointError, ConfigError, DuplicateNameError, UnknownNameError

#: public name -> the module (relative to this package) that defines it
_LAZY = {
    "create_model": "api", "get_probe": "api", "get_task": "api", "list_architectures": "api",
    "list_probes": "api", "list_tasks": "api",
    "HookedModel": "hooks", "HookPoint": "hooks",
    "hookimpl": "hookspecs",
    "init_gamma_": "initialization",
    "register_plugin": "plugin_manager", "reload_plugins": "plugin_manager", "unregister_plugin": "plugin_manager",
    "Probe": "probe", "ProbeContext": "probe", "ProbeOption": "probe",
    "ModelConfig": "settings", "check_int": "settings", "model_factory": "settings",
    "Batch": "task", "Paper": "task", "Task": "task",
    "list_pretrained": "zoo", "load": "zoo",
}

if TYPE_CHECKING:  # what static tools and IDEs see
    from .api import create_model, get_probe, get_task, list_architectures, list_probes, list_tasks
    from .hooks import HookedModel, HookPoint
    from .hookspecs import hookimpl
    from .initialization import init_gamma_
    from .plugin_manager import register_plugin, reload_plugins, unregister_plugin
    from .probe import Probe, ProbeContext, ProbeOption
    from .settings import ModelConfig, check_int, model_factory
    from .task import Batch, Paper, Task
    from .zoo import list_pretrained, load

__all__ = [
    "AchillesError", "Batch", "CheckpointError", "ConfigError", "DuplicateNameError", "HookPoint",
    "HookedModel", "ModelConfig", "Paper", "Probe", "ProbeContext", "ProbeOption", "Task", "UnknownNameError",
    "__version__", "check_int", "create_model", "get_probe", "get_task", "hookimpl", "init_gamma_",
    "list_architectures", "list_pretrained", "list_probes", "list_tasks", "load", "model_factory", "register_plugin",
    "reload_plugins", "unregister_plugin",
]


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("achilles")
    except PackageNotFoundError:  # running from a source tree without install
        return "0.0.0+unknown"


def __getattr__(name: str) -> Any:
    if name == "__version__":
        value = _version()
    elif name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value  # looked up once
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
