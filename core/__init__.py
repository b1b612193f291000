"""achilles: a plugin-based model zoo for where Mamba-style SSMs fail and Transformers don't.

The public names below load on first use (PEP 562), so ``import achilles`` and the commands that
need no model (``achilles --version``, ``--help``, shell completion) do not import torch or
huggingface_hub. ``from achilles import Task`` and ``achilles.Task`` work as ever.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from achilles.errors import AchillesError, CheckpointError, ConfigError, DuplicateNameError, UnknownNameError

#: public name -> the module (relative to this package) that defines it
_LAZY = {
    "create_model": "api", "get_probe": "contract.lookup", "get_task": "contract.lookup", "list_architectures": "contract.lookup",
    "list_probes": "contract.lookup", "list_tasks": "contract.lookup",
    "HookedModel": "models.hook_points", "HookPoint": "models.hook_points",
    "hookimpl": "contract.hookspecs",
    "init_gamma_": "models.initialization",
    "register_plugin": "contract.loader", "reload_plugins": "contract.loader", "unregister_plugin": "contract.loader",
    "Probe": "contract.probe", "ProbeContext": "contract.probe", "ProbeOption": "contract.probe",
    "ModelConfig": "contract.settings", "check_int": "contract.settings", "model_factory": "contract.settings",
    "Batch": "contract.task", "Paper": "contract.task", "Task": "contract.task",
    "list_pretrained": "zoo.index", "load": "zoo.pull",
}

if TYPE_CHECKING:  # what static tools and IDEs see
    from achilles.api import create_model
    from achilles.contract.lookup import get_probe, get_task, list_architectures, list_probes, list_tasks
    from achilles.models.hook_points import HookedModel, HookPoint
    from achilles.contract.hookspecs import hookimpl
    from achilles.models.initialization import init_gamma_
    from achilles.contract.loader import register_plugin, reload_plugins, unregister_plugin
    from achilles.contract.probe import Probe, ProbeContext, ProbeOption
    from achilles.contract.settings import ModelConfig, check_int, model_factory
    from achilles.contract.task import Batch, Paper, Task
    from achilles.zoo.index import list_pretrained
    from achilles.zoo.pull import load

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
