"""The Python API: list, create and look up tasks, architectures and probes."""

from __future__ import annotations

import inspect
from typing import Any

from .errors import ConfigError
from .plugin_manager import get_state


def _registry(kind: str):
    return get_state().registries[kind]


def list_tasks(filter: str | list[str] = "", exclude: str | list[str] = "") -> list[str]:
    """Registered task names, optionally filtered by wildcards: ``list_tasks('mqar*')``."""
    return _registry("task").names(filter, exclude)


def list_architectures(filter: str | list[str] = "", exclude: str | list[str] = "") -> list[str]:
    """Registered architecture names: ``list_architectures('mamba2*')``."""
    return _registry("architecture").names(filter, exclude)


def list_probes(filter: str | list[str] = "", exclude: str | list[str] = "") -> list[str]:
    """Registered probe names."""
    return _registry("probe").names(filter, exclude)


def _call_with_config(kind: str, name: str, factory, config: dict[str, Any]):
    try:
        return factory(**config)
    except TypeError as exc:
        # An unknown keyword is a user mistake: name it and list what is accepted.
        if "unexpected keyword argument" not in str(exc):
            raise
        bad = str(exc).split("argument")[-1].strip(" '\"")
        try:
            params = [p for p in inspect.signature(factory).parameters
                      if p not in ("self", "args", "kwargs")]
        except (TypeError, ValueError):
            params = []
        raise ConfigError(bad, f"{kind} {name!r} has no such setting"
                          + (f" (settings: {', '.join(params)})" if params else "")) from None


def create_model(name: str, pretrained: bool = False, **config: Any):
    """Build architecture ``name`` with ``config`` (e.g. ``n_layers=2, d_model=128``).

    ``name`` may also be a checkpoint, timm-style: ``hf-hub:ORG/NAME[@REV]``, a zoo id (see
    ``list_pretrained``) or a model folder; ``pretrained=True`` then loads its weights (sha256-checked),
    else builds its architecture with its settings, freshly initialised. ``config`` overrides settings."""
    if pretrained or name.startswith("hf-hub:") or name not in _registry("architecture"):
        from .pretrained import create_pretrained

        model = create_pretrained(name, pretrained, **config)
        if model is not None:
            return model
    component = _registry("architecture").get(name)
    model = _call_with_config("architecture", name, component.factory, config)
    model.arch_name = name
    return model


def get_task(name: str, **config: Any):
    """Build task ``name`` with ``config`` (e.g. ``get_task('inverse', n_layers=3)``)."""
    component = _registry("task").get(name)
    task = _call_with_config("task", name, component.factory, config)
    task.name = name
    return task


def get_probe(name: str):
    """The probe registered as ``name``."""
    component = _registry("probe").get(name)
    probe = component.factory()
    probe.name = name
    return probe


def describe(kind: str, name: str) -> str:
    return _registry(kind).get(name).description
