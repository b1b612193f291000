"""First-party recipes: one-command reproductions of the findings of the three papers.

Every module of this package that defines ``RECIPES`` is registered: a new recipe is a new module
(or a new entry in a module's ``RECIPES``), with no list to edit here."""

import importlib
import pkgutil

from achilles import hookimpl


@hookimpl
def register_recipes(register):
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        for recipe in getattr(module, "RECIPES", ()):
            register(recipe.name, recipe, description=recipe.title)
