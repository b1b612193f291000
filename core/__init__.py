"""achilles: a plugin-based model zoo for where Mamba-style SSMs fail and Transformers don't."""

from importlib.metadata import PackageNotFoundError, version as _version

from .api import create_model, get_probe, get_task, list_architectures, list_probes, list_tasks
from .errors import AchillesError, CheckpointError, ConfigError, DuplicateNameError, UnknownNameError
from .hooks import HookedModel, HookPoint
from .hookspecs import hookimpl
from .initialization import init_gamma_
from .plugin_manager import register_plugin, reload_plugins, unregister_plugin
from .probe import Probe, ProbeContext, ProbeOption
from .settings import ModelConfig, check_int, model_factory
from .task import Batch, Paper, Task
from .zoo import list_pretrained, load

try:
    __version__ = _version("achilles")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.0.0+unknown"

__all__ = [
    "AchillesError", "Batch", "CheckpointError", "ConfigError", "DuplicateNameError", "HookPoint",
    "HookedModel", "ModelConfig", "Paper", "Probe", "ProbeContext", "ProbeOption", "Task", "UnknownNameError",
    "__version__", "check_int", "create_model", "get_probe", "get_task", "hookimpl", "init_gamma_",
    "list_architectures", "list_pretrained", "list_probes", "list_tasks", "load", "model_factory", "register_plugin",
    "reload_plugins", "unregister_plugin",
]
