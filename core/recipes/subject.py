"""A recipe's subject, swapped: the same finding measured on another sequence mixer.

A recipe names its *subject*, the architecture the paper studies (``Recipe.subject``, standard
Mamba2 for every first-party recipe): each run group of that architecture is the subject, the
others are controls (the Transformer, the residual Mamba2, global selection). ``with_subject``
returns the recipe with another architecture in the subject's place and the controls kept;
``achilles reproduce NAME --subject ARCH`` and ``achilles atlas`` use it. The claims keep quoting
the paper (about Mamba); the report says which architecture they were measured on.
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any

from achilles.errors import AchillesError, ConfigError
from achilles.recipes.recipe import Recipe, RunGroup


def subject_groups(recipe: Recipe, profile: str) -> list[str]:
    """The names of the run groups that are the recipe's subject at ``profile``."""
    return [g.name for g in recipe.plan(profile).runs if g.arch == recipe.subject]


def with_subject(recipe: Recipe, arch: str | None) -> Recipe:
    """``recipe`` with ``arch`` in its subject's place (unchanged for None or its own subject).
    Refuses, in one line, a recipe whose subject cannot be swapped, an unknown architecture (with
    close matches) and a subject that cannot serve a group's task (its vocabulary or length)."""
    if arch is None or arch == recipe.subject:
        return recipe
    if recipe.fixed_subject:
        raise AchillesError(f"recipe {recipe.name!r} cannot take another subject: {recipe.fixed_subject}")
    from achilles.contract.lookup import registry

    registry("architecture").get(arch)  # unknown: UnknownNameError with close matches
    plans, dropped = {}, set()
    for profile, plan in recipe.plans.items():
        groups = []
        for group in plan.runs:
            if group.arch != recipe.subject:
                groups.append(group)
                continue
            swapped, lost = _swap(group, arch)
            dropped |= lost
            groups.append(swapped)
        plans[profile] = replace(plan, runs=tuple(groups))
    note = (f"Subject: {arch} in place of the paper's {recipe.subject} (run groups "
            f"{', '.join(subject_groups(recipe, next(iter(recipe.plans))))}); the claims quote the paper and are "
            f"measured on {arch}.")
    if dropped:
        note += f" Settings of {recipe.subject} that {arch} does not have were left out: {', '.join(sorted(dropped))}."
    swapped = tuple(dict.fromkeys(name for profile in recipe.plans for name in subject_groups(recipe, profile)))
    return replace(recipe, plans=plans, tested_subject=arch, subject_note=note, swapped_groups=swapped)


#: claim fields that quote the paper or key the per-run values: never renamed
_QUOTED = frozenset({"id", "statement", "paper", "where", "paper_value", "rule", "rule_spec", "verdict",
                     "pair", "data_pair"})


def name_subject(claim: Any, recipe: Recipe) -> Any:
    """A claim row (``evaluate_claims``) whose texts name the tested architecture where they name a
    swapped group: "mamba2 test accuracy" -> "deltanet test accuracy", "mamba2-width" ->
    "deltanet-width", "mamba2-global" untouched (a control). The paper's quotes stay as they are."""
    if not recipe.tested_subject or not recipe.swapped_groups:
        return claim
    names = sorted(recipe.swapped_groups, key=len, reverse=True)
    pattern = re.compile(r"(?<![\w.-])(" + "|".join(re.escape(n) for n in names) + r")(?![\w-])")

    def rename(match: re.Match) -> str:
        group = match.group(1)
        return (group.replace(recipe.subject, recipe.tested_subject, 1) if recipe.subject in group
                else f"{recipe.tested_subject} ({group})")

    def walk(value: Any, key: str = "") -> Any:
        if key in _QUOTED:
            return value
        if isinstance(value, str):
            return pattern.sub(rename, value)
        if isinstance(value, dict):
            return {k: walk(v, k) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v) for v in value]
        return value

    return walk(claim)


def _swap(group: RunGroup, arch: str) -> tuple[RunGroup, set[str]]:
    """The group trained as ``arch``: model settings and grid axes ``arch`` lacks are dropped."""
    from achilles.sweep.grid import known_settings

    known = known_settings(arch, group.task)
    model = {k: v for k, v in group.model.items() if k in known}
    grid = {k: v for k, v in group.grid.items() if "." in k or k in known}
    lost = (set(group.model) - set(model)) | (set(group.grid) - set(grid))
    return replace(group, arch=arch, model=model, grid=grid), lost


def check_subject_serves(recipe: Recipe, groups) -> None:
    """Build each subject group's model once for its task (seed 0, nothing trained), so that a
    subject whose vocabulary, length or settings cannot serve the task is refused before any
    folder or training: the model's own one-line error names the limit. ``groups``: the
    reproduction's ``GroupRuns`` (a group with its checked sweep)."""
    if not recipe.tested_subject:
        return
    from achilles.training.trainer import build_task_and_model

    for g in groups:
        group, spec = g.group, g.spec
        if group.arch != recipe.tested_subject:
            continue
        cell: dict[str, Any] = {k: v[0] for k, v in group.grid.items() if "." not in k}
        try:
            build_task_and_model(group.arch, group.task, {**spec.model_config, **cell}, spec.task_config, 0)
        except ConfigError as exc:
            raise AchillesError(f"subject {recipe.tested_subject!r} cannot serve recipe {recipe.name!r} "
                                f"(group {group.name!r} on {group.task}): {exc}") from None
