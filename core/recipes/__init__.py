"""Recipes: one-command reproductions of the papers' findings, with claims judged from the runs.

A plugin registers recipes through the ``register_recipes`` hook; ``achilles reproduce NAME``
runs one (see ``achilles.recipes.runner``). Declaring a recipe needs only this module::

    from achilles.recipes import Claim, Paper, Plan, Recipe, RunGroup, Source, at_most, rate
"""

from achilles.recipes.statistics import (HELD, INCONCLUSIVE, NOT_HELD, Measurement, Rule, at_least, at_most,
                                         near_chance, within)
from achilles.recipes.measure import mean_of, minus, per_run, probe_value, rate, share_of_cells
from achilles.recipes.lookup import get_recipe, list_recipes
from achilles.recipes.results import RecipeResults, RunRecord, Selector
from achilles.contract.task import Paper
from achilles.recipes.spec import Claim, Evaluation, Figure, Plan, Precondition, ProbeStep, Recipe, RunGroup, Source, Until

__all__ = ["Claim", "Evaluation", "Figure", "HELD", "INCONCLUSIVE", "Measurement", "NOT_HELD", "Paper", "Plan", "Precondition",
           "ProbeStep", "Recipe", "RecipeResults", "Rule", "RunGroup", "RunRecord", "Selector", "Source", "at_least",
           "at_most", "get_recipe", "list_recipes", "mean_of", "minus", "near_chance", "per_run", "probe_value", "rate",
           "share_of_cells", "Until", "within"]
