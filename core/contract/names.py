"""Name registries for tasks, architectures and probes (timm-style listing)."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from typing import Any, Callable

from achilles.errors import DuplicateNameError, UnknownNameError


@dataclass(frozen=True)
class Component:
    name: str
    factory: Callable[..., Any]
    plugin: str
    description: str = ""
    extra: dict = field(default_factory=dict)


class ComponentRegistry:
    """Unique names -> factories, with wildcard listing and close-match errors."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Component] = {}

    def add(self, name: str, factory: Callable[..., Any], plugin: str,
            description: str | None = None, **extra: Any) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"{self.kind} name must be a non-empty string, got {name!r}")
        if name in self._entries:
            owner = self._entries[name].plugin
            raise DuplicateNameError(
                f"{self.kind} {name!r} is registered twice: by plugin {owner!r} and by plugin {plugin!r}")
        if description is None:
            doc = (getattr(factory, "__doc__", None) or "").strip()
            description = doc.splitlines()[0] if doc else ""
        self._entries[name] = Component(name, factory, plugin, description, dict(extra))

    def get(self, name: str) -> Component:
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownNameError(self.kind, name, list(self._entries)) from None

    def names(self, filter: str | list[str] = "", exclude: str | list[str] = "") -> list[str]:
        """Sorted names matching any of the wildcard ``filter`` patterns and none of ``exclude``."""
        names = sorted(self._entries)
        if filter:
            pats = [filter] if isinstance(filter, str) else list(filter)
            names = [n for n in names if any(fnmatch.fnmatchcase(n, p) for p in pats)]
        if exclude:
            pats = [exclude] if isinstance(exclude, str) else list(exclude)
            names = [n for n in names if not any(fnmatch.fnmatchcase(n, p) for p in pats)]
        return names

    def entries(self) -> list[Component]:
        return [self._entries[n] for n in sorted(self._entries)]

    def remove_plugin(self, plugin: str) -> None:
        self._entries = {k: v for k, v in self._entries.items() if v.plugin != plugin}

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def __len__(self) -> int:
        return len(self._entries)
