"""First-party recipes: one-command reproductions of the findings of the three papers.

Every module of this package that defines ``RECIPES`` is registered: a new recipe is a new module
(or a new entry in a module's ``RECIPES``), with no list to edit here."""

from achilles import hookimpl

from ..discovery import declarations


@hookimpl
def register_recipes(register):
    for _, recipes in declarations(__name__, "RECIPES"):
        for recipe in recipes:
            register(recipe.name, recipe, description=recipe.title)
