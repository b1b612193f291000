"""The Python API: list, create and look up tasks, architectures and probes."""

from __future__ import annotations

from typing import Any

from achilles.contract.names import ComponentRegistry
from achilles.contract.loader import get_state
from achilles.contract.settings import check_settings


def registry(kind: str) -> ComponentRegistry:
    """The registry of ``kind``: ``task``, ``architecture`` or ``probe``."""
    return get_state().registries[kind]


def list_tasks(filter: str | list[str] = "", exclude: str | list[str] = "") -> list[str]:
    """Registered task names, optionally filtered by wildcards: ``list_tasks('mqar*')``."""
    return registry("task").names(filter, exclude)


def list_architectures(filter: str | list[str] = "", exclude: str | list[str] = "") -> list[str]:
    """Registered architecture names: ``list_architectures('mamba2*')``."""
    return registry("architecture").names(filter, exclude)


def list_probes(filter: str | list[str] = "", exclude: str | list[str] = "") -> list[str]:
    """Registered probe names."""
    return registry("probe").names(filter, exclude)


def _build(kind: str, name: str, factory, config: dict[str, Any]):
    check_settings(kind, name, factory, config)  # an unknown setting is a user mistake: list what is accepted
    return factory(**config)


def create_architecture(name: str, **config: Any):
    """Build registered architecture ``name`` with ``config`` (e.g. ``n_layers=2, d_model=128``).
    ``achilles.create_model`` (``achilles/api.py``) also takes checkpoint names and calls this one."""
    from achilles.contract.checks import check_model

    component = registry("architecture").get(name)
    model = _build("architecture", name, component.factory, config)
    check_model(name, model)
    model.arch_name = name
    return model


def get_task(name: str, **config: Any):
    """Build task ``name`` with ``config`` (e.g. ``get_task('inverse', n_layers=3)``)."""
    from achilles.contract.checks import check_task

    component = registry("task").get(name)
    task = _build("task", name, component.factory, config)
    check_task(name, task)
    task.name = name
    return task


def rebuild_task(name: str, recorded: dict[str, Any]):
    """The task a run folder recorded: ``get_task`` with settings renamed since then read under
    their new names (the task's ``renamed_settings``)."""
    renamed = getattr(registry("task").get(name).factory, "renamed_settings", {})
    return get_task(name, **{renamed.get(k, k): v for k, v in recorded.items()})


def get_probe(name: str):
    """The probe registered as ``name``."""
    component = registry("probe").get(name)
    probe = component.factory()
    probe.name = name
    return probe


def describe(kind: str, name: str) -> str:
    return registry(kind).get(name).description
