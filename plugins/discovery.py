"""How each first-party plugin package registers: by declaration, with no list to keep.

Every module of ``achilles.plugins.tasks`` that defines ``TASKS`` (name -> (class, description))
is registered, and likewise ``PROBES`` in ``probes``, ``ARCHITECTURES`` (name -> (factory,
description)) in ``archs`` and ``RECIPES`` (a tuple of recipes) in ``recipes``. A new task,
probe, architecture or recipe is one new module (plus its test and its docs section); each
package's ``__init__.py`` calls :func:`declarations` in its registration hook.

This module imports only the standard library, so a package ``__init__`` may import it at the top
and stay light (``achilles --help`` imports the plugins without running their hooks)."""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType
from typing import Any, Callable, Iterator


def declarations(package: str, attribute: str) -> Iterator[tuple[ModuleType, Any]]:
    """``(module, module.<attribute>)`` for every module of the package named ``package`` that
    defines ``attribute``, in sorted order of module name (so registration order is stable).
    Every module of the package is imported, the ones declaring nothing too."""
    path = importlib.import_module(package).__path__
    for info in sorted(pkgutil.iter_modules(path), key=lambda m: m.name):
        module = importlib.import_module(f"{package}.{info.name}")
        if hasattr(module, attribute):
            yield module, getattr(module, attribute)


def register_declared(package: str, attribute: str, register: Callable[..., Any]) -> None:
    """Call ``register(name, component, description=description)`` for each entry of every
    ``attribute`` dict (name -> (component, description)) that the modules of ``package``
    declare, module by module in sorted order, each dict in its own order."""
    for _, declared in declarations(package, attribute):
        for name, (component, description) in declared.items():
            register(name, component, description=description)
