"""Recipes: one-command reproductions of the papers' findings, with claims judged from the runs.

A plugin registers recipes through the ``register_recipes`` hook; ``achilles reproduce NAME``
runs one (see ``achilles.recipes.reproduction``). Declaring a recipe needs only this module::

    from achilles.recipes import Claim, Paper, Plan, Recipe, RunGroup, Source, at_most, rate

Owns: ``recipe.py`` (what a recipe is: runs, evaluations, probes, figures, claims, as plain data),
``registered.py`` (looking up registered recipes), ``reproduction.py`` (running one: plan, runs,
probes, claims, report), ``sweeps.py`` (where recipes meet the sweep machinery), ``from_zoo.py``
(a run that is a bundled zoo entry is copied, not retrained), ``recipe_results.py`` (the runs'
results read back), ``measure.py`` (the measures a claim names), ``statistics.py`` (intervals,
rules, verdicts), ``report.py`` (report.md, report.json, the summary page), ``cost.py`` (time
estimates from measured throughput), ``subject.py`` (a recipe's subject swapped) and
``atlas.py`` (every claim against every subject).

May import every folder below the command line (``achilles.cli``).
"""

from achilles.recipes.statistics import (HELD, INCONCLUSIVE, NOT_HELD, Measurement, Rule, at_least, at_most,
                                         near_chance, within)
from achilles.recipes.measure import mean_of, minus, per_run, probe_value, rate, share_of_cells
from achilles.recipes.registered import get_recipe, list_recipes
from achilles.recipes.recipe_results import RecipeResults, RunRecord, Selector
from achilles.contract.task import Paper
from achilles.recipes.recipe import Claim, Evaluation, Figure, Plan, Precondition, ProbeStep, Recipe, RunGroup, Source, Until

__all__ = ["Claim", "Evaluation", "Figure", "HELD", "INCONCLUSIVE", "Measurement", "NOT_HELD", "Paper", "Plan", "Precondition",
           "ProbeStep", "Recipe", "RecipeResults", "Rule", "RunGroup", "RunRecord", "Selector", "Source", "at_least",
           "at_most", "get_recipe", "list_recipes", "mean_of", "minus", "near_chance", "per_run", "probe_value", "rate",
           "share_of_cells", "Until", "within"]
