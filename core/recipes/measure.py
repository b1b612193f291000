"""The measures a claim names, read from a recipe's results: ``rate``, ``mean_of``, ``per_run``,
``probe_value``, ``minus`` and ``share_of_cells``, and ``evaluate_claims``, which judges every
claim of a recipe. How a measurement's interval and verdict are computed is ``statistics.py``.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Callable, Mapping

from achilles.recipes.statistics import (HELD, INCONCLUSIVE, Measurement, difference, no_data, observation,
                                         rate_measurement, runs_to_decide, value_measurement, wilson)

if TYPE_CHECKING:  # pragma: no cover
    from achilles.recipes.recipe_results import RecipeResults, RunRecord

# -- measures a claim declares ------------------------------------------------------------------------
Measure = Callable[["RecipeResults"], Measurement]


def _describe(group: str, metric: str, split: str | None, eval: str | None, where: Mapping[str, Any]) -> str:
    place = f"{eval}:{split}" if eval else (split or "")
    cell = ", ".join(f"{k}={v}" for k, v in where.items())
    return f"{group} {place} {metric}" + (f" ({cell})" if cell else "")


def _qualified(results: "RecipeResults", group: str, where: Mapping[str, Any], only, what: str) -> str:
    """``what`` plus how many runs ``only`` kept (when it selects)."""
    if only is None:
        return what
    return f"{what}; {results.selected(group, where, only)[2]}"


def _too_few(results: "RecipeResults", group: str, where, only, found: int, min_runs: int) -> str:
    """Why a measurement resting on ``found`` qualifying runs cannot be trusted, or ''."""
    if found >= min_runs:
        return ""
    total = len(results.group(group, where))
    if only is None:
        return f"only {found} of {total} runs of {group} finished with this number; the claim needs at least {min_runs}"
    return (f"only {found} of {total} runs of {group} met the premise ({only.text if only else 'finished'}); "
            f"the claim needs at least {min_runs}")


def rate(group: str, metric: str, *, split: str = "test", eval: str | None = None,
         where: Mapping[str, Any] | None = None, share: float = 1.0, only=None, min_runs: int = 1) -> Measure:
    """The final ``split.metric`` (or of evaluation ``eval``) of the runs of ``group`` matching
    ``where`` (and the ``Selector`` ``only``), as a rate over samples; ``share`` is the fraction
    of a split's samples the metric counts (1/16 for one anchor pair of 16 in equal shares);
    ``min_runs``: fewer qualifying runs make the measurement no data, saying why."""
    where = dict(where or {})

    def measure(results: "RecipeResults") -> Measurement:
        obs, missing = results.observations(group, metric, split=split, eval=eval, where=where, only=only,
                                            share=share)
        short = _too_few(results, group, where, only, len(obs), min_runs)
        if short:
            return no_data(f"{_describe(group, metric, split, eval, where)}; {short}", missing)
        what = _qualified(results, group, where, only, _describe(group, metric, split, eval, where))
        return rate_measurement([], [], what, missing, obs=obs)

    return measure


def mean_of(group: str, metric: str, *, split: str = "test", eval: str | None = None,
            where: Mapping[str, Any] | None = None) -> Measure:
    """Like ``rate`` for a value that is not a rate over samples (a loss, a similarity)."""
    where = dict(where or {})

    def measure(results: "RecipeResults") -> Measurement:
        obs, missing = results.observations(group, metric, split=split, eval=eval, where=where)
        return value_measurement([], _describe(group, metric, split, eval, where), missing, obs=obs)

    return measure


def per_run(group: str, fn: Callable[["RunRecord"], tuple[float, int | None] | None], what: str, *,
            where: Mapping[str, Any] | None = None, only=None, min_runs: int = 1, is_rate: bool = True) -> Measure:
    """A measurement from ``fn(run) -> (value, distinct samples)`` on each finished run of ``group``
    (None: the run lacks the number and is missing)."""
    where = dict(where or {})

    def measure(results: "RecipeResults") -> Measurement:
        runs, missing, _ = results.selected(group, where, only)
        obs = []
        for run in runs:
            got = fn(run)
            if got is None:
                missing.append(f"{run.label} (no value)")
                continue
            obs.append(observation(run, got[0], got[1]))
        short = _too_few(results, group, where, only, len(obs), min_runs)
        if short:
            return no_data(f"{what}; {short}", missing)
        text = _qualified(results, group, where, only, what)
        if is_rate:
            return rate_measurement([], [], text, missing, obs=obs)
        return value_measurement([], text, missing, obs=obs)

    return measure


def probe_value(group: str, probe: str, key: str, *, where: Mapping[str, Any] | None = None,
                count_key: Any = None, only=None, min_runs: int = 1) -> Measure:
    """A number (``key``, dotted) from probe ``probe``'s result on each run of ``group``: a rate
    when ``count_key`` gives its sample count (a dotted key of the result, or a function of it),
    else a plain value."""
    where = dict(where or {})

    def measure(results: "RecipeResults") -> Measurement:
        obs, missing = results.probe_observations(group, probe, key, count_key, where=where, only=only)
        what = f"{group} {probe} {key}" + (f" ({', '.join(f'{k}={v}' for k, v in where.items())})" if where else "")
        short = _too_few(results, group, where, only, len(obs), min_runs)
        if short:
            return no_data(f"{what}; {short}", missing)
        what = _qualified(results, group, where, only, what)
        if count_key:
            return rate_measurement([], [], what, missing, obs=obs)
        return value_measurement([], what, missing, obs=obs)

    return measure


def minus(a: Measure, b: Measure, what: str = "") -> Measure:
    """The difference of two measures (``a - b``), e.g. Transformer minus Mamba2 accuracy."""
    return lambda results: difference(a(results), b(results), what)


def _wilson_lower_all(n: int) -> float:
    return wilson(n, n)[0]


def share_of_cells(group: str, metric: str, predicate: Callable[[float], bool], predicate_text: str, *,
                   split: str = "test", only=None, threshold: float | None = None) -> Measure:
    """The fraction of a group's grid cells (mean over their runs) where ``predicate`` holds, with a
    Wilson interval over the cells: "fails nearly everywhere". ``only`` keeps the runs that may
    count (e.g. those that fitted their training data); ``threshold`` (the rule's) lets the
    measurement say when even every cell agreeing could not decide the claim."""

    def measure(results: "RecipeResults") -> Measurement:
        runs, missing, note = results.selected(group, None, only)
        cells: dict[tuple, list] = {}
        for run in runs:
            value = run.final(split, metric)
            if math.isnan(value):
                missing.append(f"{run.label} (no {split}.{metric})")
                continue
            cells.setdefault(tuple(sorted(run.values.items())), []).append((run, value))
        if not cells:
            return no_data("no finished cell" + (f" ({note})" if note else ""), missing)
        obs = []
        for key, entries in cells.items():
            mean = sum(v for _, v in entries) / len(entries)
            obs.append({"run": ", ".join(r.label for r, _ in entries), "seed": None, "value": mean,
                        "n": None, "pair": str(dict(key)), "hit": bool(predicate(mean))})
        hits = sum(o["hit"] for o in obs)
        lo, hi = wilson(hits, len(obs))
        undecidable = ""
        if threshold is not None and _wilson_lower_all(len(obs)) < threshold:
            need = next(n for n in range(1, 1000) if _wilson_lower_all(n) >= threshold)
            undecidable = (f"with {len(obs)} qualifying cells even all of them agreeing gives a lower bound of "
                           f"{_wilson_lower_all(len(obs)):.2f} < {threshold:g}: at least {need} cells are needed")
        return Measurement(hits / len(obs), lo, hi,
                           f"share of {len(obs)} {group} cells with {split} {metric} {predicate_text} "
                           f"(cell = mean over its runs{'; ' + note if note else ''}); Wilson 95% over cells",
                           obs, len(obs), missing, f"n = {len(obs)} grid cells", "wilson-cells",
                           undecidable=undecidable, kind="share")

    return measure





def evaluate_claims(claims, results: "RecipeResults") -> list[dict[str, Any]]:
    """Each claim's measurement and computed verdict, as report rows."""
    rows = []
    for claim in claims:
        try:
            m = claim.measure(results)
        except Exception as exc:  # a recipe bug must not hide the other claims
            m = no_data(f"measurement failed ({type(exc).__name__}: {exc})")
        verdict, why = claim.rule.verdict(m)
        preconditions = []
        for pre in claim.requires:
            try:
                pm = pre.measure(results)
            except Exception as exc:
                pm = no_data(f"measurement failed ({type(exc).__name__}: {exc})")
            pv, pwhy = pre.rule.verdict(pm)
            preconditions.append({"text": pre.text, "rule": pre.rule.text(), "rule_spec": pre.rule.to_dict(),
                                  "measured": pm.text(), "verdict": pv, "measurement": pm.to_dict()})
            if pv != HELD and verdict != INCONCLUSIVE:
                verdict, why = INCONCLUSIVE, (f"precondition not met: {pre.text} (measured {pm.text()}, "
                                              f"needs {pre.rule.text()}); {claim.rule.text()} alone would "
                                              f"say {verdict}")
        if verdict == INCONCLUSIVE and "straddles" in why:
            why = f"{why}; {runs_to_decide(m, claim.rule)}"
        if verdict == INCONCLUSIVE and claim.decides:
            why = f"{why}. What would decide it: {claim.decides}"
        rows.append({"preconditions": preconditions, "id": claim.id, "statement": claim.statement,
                     "paper": claim.source.paper.label, "where": claim.source.where,
                     "paper_value": claim.source.value, "measured_as": claim.measured_as,
                     "rule": claim.rule.text(), "rule_spec": claim.rule.to_dict(), "counts": m.counts,
                     "measurement": m.to_dict(), "measured": m.text(), "verdict": verdict, "why": why})
    return rows
