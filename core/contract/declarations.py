"""What a registered task or architecture declares about itself, read defensively.

A task class declares ``paper`` (an ``achilles.Paper``; a ``{"title", "arxiv", "section"}`` dict,
an arXiv id or a list of them are read too) and ``variant_settings`` (the settings whose values
name a variant, e.g. where an associative-recall task's pairs sit); an architecture may be registered with ``tags=[...]`` (its family, e.g.
``state-space-model``). Whatever is not declared is None or empty: nothing is guessed from a
name, and a component whose plugin is not installed simply declares nothing.
"""

from __future__ import annotations

from typing import Any

from achilles.errors import UnknownNameError


def task_class(task: str) -> Any | None:
    from achilles.contract.lookup import registry

    try:
        return registry("task").get(str(task)).factory
    except UnknownNameError:
        return None


def task_papers(task: str) -> list[dict[str, str | None]]:
    """The papers task ``task`` declares, as ``{"title", "arxiv", "section", "bibtex"}`` dicts (empty if none)."""
    declared = getattr(task_class(task), "paper", None)
    if declared is None:
        return []
    papers = []
    for item in declared if isinstance(declared, (list, tuple)) else [declared]:
        if isinstance(item, str):
            item = {"arxiv": item}
        get = item.get if isinstance(item, dict) else lambda key, _item=item: getattr(_item, key, None)
        papers.append({"title": get("title") or None, "arxiv": get("arxiv") or None, "section": get("section") or None,
                       "bibtex": get("bibtex") or None})
    return [p for p in papers if p["title"] or p["arxiv"]]


def task_variant(task: str, task_config: dict[str, Any] | None) -> str | None:
    """The variant the run's task settings name (e.g. ``last-K1V1``), from the task's declared
    ``variant_settings``; None when the task declares none or all are unset."""
    settings = getattr(task_class(task), "variant_settings", None) or ()
    task_config = task_config or {}
    parts = []
    for key in settings:
        value = task_config.get(key)
        if value in (None, "", [], ()):
            continue
        parts.append("+".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value))
    return "-".join(parts) or None


def arch_tags(arch: str) -> list[str]:
    """The tags architecture ``arch`` was registered with (its family), empty if none."""
    from achilles.contract.lookup import registry

    try:
        tags = registry("architecture").get(str(arch)).extra.get("tags") or ()
    except UnknownNameError:
        return []
    return [str(t) for t in ([tags] if isinstance(tags, str) else tags)]
