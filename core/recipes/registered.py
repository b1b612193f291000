"""Looking up registered recipes (``register_recipes`` hook)."""

from __future__ import annotations

import re

from achilles.errors import AchillesError
from achilles.contract.loader import get_state
from achilles.recipes.recipe import Recipe


def list_recipes(filter: str | list[str] = "", exclude: str | list[str] = "") -> list[str]:
    """Registered recipe names in natural order (fig4 before fig13), optionally filtered by
    wildcards: ``list_recipes('achilles-*')``."""
    return sorted(get_state().registries["recipe"].names(filter, exclude), key=natural_key)


def natural_key(name: str) -> list:
    """Sort key that puts fig4 before fig13."""
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name)]


def get_recipe(name: str) -> Recipe:
    """The recipe registered as ``name`` (an unknown name lists the close matches)."""
    component = get_state().registries["recipe"].get(name)
    recipe = component.factory() if callable(component.factory) and not isinstance(component.factory, Recipe) \
        else component.factory
    if not isinstance(recipe, Recipe):
        raise AchillesError(f"plugin {component.plugin!r} registered recipe {name!r} as "
                            f"{type(recipe).__name__}, not an achilles.recipes.Recipe")
    try:
        return recipe.check()
    except ValueError as exc:
        raise AchillesError(f"recipe {name!r} of plugin {component.plugin!r} is malformed: {exc}") from None
