"""First-party recipes: one-command reproductions of the findings of the three papers."""

from achilles import hookimpl


@hookimpl
def register_recipes(register):
    from . import achilles_heel, copy_cot, shortcuts

    for module in (achilles_heel, shortcuts, copy_cot):
        for recipe in module.RECIPES:
            register(recipe.name, recipe, description=recipe.title)
