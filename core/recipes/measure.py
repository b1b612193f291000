"""Measurements, intervals and verdicts of claims.

A claim's number is a ``Measurement``: a value with a 95% interval and the words saying how the
interval was formed. A ``Rule`` turns it into a verdict:

* ``held``          the whole interval satisfies the rule;
* ``not held``      the whole interval violates it;
* ``inconclusive``  the interval straddles the rule's threshold, or runs the claim needs are
                    missing (never finished, failed, interrupted).

Rates (accuracies over samples) get the wider of two intervals: across seeds (Student t on the
per-seed values) and binomial (Wilson, on the samples pooled over seeds). With one seed only the
binomial one exists; an across-seed spread that the sample count cannot explain widens it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

if TYPE_CHECKING:  # pragma: no cover
    from .results import RecipeResults, RunRecord

HELD, NOT_HELD, INCONCLUSIVE = "held", "not held", "inconclusive"
VERDICTS = (HELD, NOT_HELD, INCONCLUSIVE)
Z95 = 1.959964
#: two-sided 95% Student t quantiles by degrees of freedom (1..30); above 30 the normal one
_T95 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
        2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
        2.045, 2.042)


def t95(dof: int) -> float:
    return _T95[dof - 1] if 1 <= dof <= len(_T95) else Z95


def wilson(successes: float, n: float) -> tuple[float, float]:
    """95% Wilson score interval of a binomial rate (``successes`` may be fractional: a pooled
    rate times its count)."""
    if n <= 0:
        return 0.0, 1.0
    p = min(1.0, max(0.0, successes / n))
    denom = 1 + Z95 ** 2 / n
    centre = (p + Z95 ** 2 / (2 * n)) / denom
    half = Z95 * math.sqrt(p * (1 - p) / n + Z95 ** 2 / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def seed_interval(values: Sequence[float]) -> tuple[float, float] | None:
    """Mean ± t·sd/√n across seeds (None with fewer than two values)."""
    if len(values) < 2:
        return None
    mean = sum(values) / len(values)
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
    half = t95(len(values) - 1) * sd / math.sqrt(len(values))
    return mean - half, mean + half


@dataclass
class Measurement:
    """A measured value with its 95% interval; ``per_run`` lists the contributing values."""

    value: float | None
    lo: float | None
    hi: float | None
    method: str
    per_run: list[float] = field(default_factory=list)
    samples: int | None = None
    missing: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return self.value is not None and not self.missing

    def text(self, digits: int = 3) -> str:
        if self.value is None:
            return "no data"
        body = f"{self.value:.{digits}f}"
        if self.lo is not None and self.hi is not None:
            body += f" [{self.lo:.{digits}f}, {self.hi:.{digits}f}]"
        return body

    def to_dict(self) -> dict[str, Any]:
        return {"value": self.value, "lo": self.lo, "hi": self.hi, "method": self.method,
                "per_run": self.per_run, "samples": self.samples, "missing": self.missing}


def no_data(why: str, missing: list[str] | None = None) -> Measurement:
    return Measurement(None, None, None, why, missing=list(missing or []))


def rate_measurement(rates: Sequence[float], counts: Sequence[int], what: str = "",
                     missing: Sequence[str] = ()) -> Measurement:
    """The mean of per-run rates with the wider of the across-run t and pooled Wilson intervals."""
    rates = [float(r) for r in rates]
    if not rates or any(math.isnan(r) for r in rates):
        return no_data((what + "; " if what else "") + "no finished run reports this metric", list(missing))
    mean = sum(rates) / len(rates)
    n = int(sum(counts))
    lo, hi = wilson(sum(r * c for r, c in zip(rates, counts)), n)
    how = f"Wilson 95% over {n:,} samples"
    spread = seed_interval(rates)
    if spread is not None:
        lo, hi = min(lo, max(0.0, spread[0])), max(hi, min(1.0, spread[1]))
        how = f"mean of {len(rates)} runs; 95%: wider of across-run t and " + how
    return Measurement(mean, lo, hi, (what + "; " if what else "") + how, rates, n, list(missing))


def value_measurement(values: Sequence[float], what: str = "", missing: Sequence[str] = ()) -> Measurement:
    """The mean of per-run values (not rates) with an across-run t interval (none for one run)."""
    values = [float(v) for v in values]
    if not values or any(math.isnan(v) for v in values):
        return no_data((what + "; " if what else "") + "no finished run reports this value", list(missing))
    mean = sum(values) / len(values)
    spread = seed_interval(values)
    how = (f"mean of {len(values)} runs; 95% across-run t" if spread
           else "one run: no interval")
    lo, hi = spread if spread else (None, None)
    return Measurement(mean, lo, hi, (what + "; " if what else "") + how, values, None, list(missing))


def difference(a: Measurement, b: Measurement, what: str = "") -> Measurement:
    """``a - b`` with the conservative interval [a.lo - b.hi, a.hi - b.lo]."""
    missing = a.missing + b.missing
    if a.value is None or b.value is None:
        return no_data("a side of the comparison has no data", missing)
    lo = a.lo - b.hi if a.lo is not None and b.hi is not None else None
    hi = a.hi - b.lo if a.hi is not None and b.lo is not None else None
    return Measurement(a.value - b.value, lo, hi,
                       (what + "; " if what else "") + "difference; 95%: from the two sides' intervals",
                       [], None, missing)


# -- rules -----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Rule:
    """``op`` is ">=" or "<="; the claim holds when the measured value is on that side of
    ``threshold`` over its whole interval."""

    op: str
    threshold: float

    def text(self) -> str:
        return f"{'≥' if self.op == '>=' else '≤'} {self.threshold:g}"

    def verdict(self, m: Measurement) -> tuple[str, str]:
        """(verdict, why)."""
        if m.value is None:
            return INCONCLUSIVE, m.method
        if m.missing:
            return INCONCLUSIVE, f"{len(m.missing)} run(s) missing: " + ", ".join(m.missing[:4])
        lo = m.lo if m.lo is not None else m.value
        hi = m.hi if m.hi is not None else m.value
        ok = (lambda x: x >= self.threshold) if self.op == ">=" else (lambda x: x <= self.threshold)
        if ok(lo) and ok(hi):
            return HELD, f"the whole interval is {self.text()}"
        if not ok(lo) and not ok(hi):
            return NOT_HELD, f"the whole interval misses {self.text()}"
        return INCONCLUSIVE, f"the interval straddles {self.threshold:g}"


def at_least(threshold: float) -> Rule:
    return Rule(">=", threshold)


def at_most(threshold: float) -> Rule:
    return Rule("<=", threshold)


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


def rate(group: str, metric: str, *, split: str = "test", eval: str | None = None,
         where: Mapping[str, Any] | None = None, share: float = 1.0, only=None) -> Measure:
    """The final ``split.metric`` (or of evaluation ``eval``) of the runs of ``group`` matching
    ``where`` (and the ``Selector`` ``only``), as a rate over samples; ``share`` is the fraction
    of a split's samples the metric counts (1/16 for one anchor pair of 16 in equal shares)."""
    where = dict(where or {})

    def measure(results: "RecipeResults") -> Measurement:
        values, counts, missing = results.metric(group, metric, split=split, eval=eval, where=where, only=only)
        counts = [max(1, int(round(c * share))) for c in counts]
        what = _qualified(results, group, where, only, _describe(group, metric, split, eval, where))
        return rate_measurement(values, counts, what, missing)

    return measure


def mean_of(group: str, metric: str, *, split: str = "test", eval: str | None = None,
            where: Mapping[str, Any] | None = None) -> Measure:
    """Like ``rate`` for a value that is not a rate over samples (a loss, a similarity)."""
    where = dict(where or {})

    def measure(results: "RecipeResults") -> Measurement:
        values, _, missing = results.metric(group, metric, split=split, eval=eval, where=where)
        return value_measurement(values, _describe(group, metric, split, eval, where), missing)

    return measure


def probe_value(group: str, probe: str, key: str, *, where: Mapping[str, Any] | None = None,
                count_key: Any = None, only=None) -> Measure:
    """A number (``key``, dotted) from probe ``probe``'s result on each run of ``group``: a rate
    when ``count_key`` gives its sample count (a dotted key of the result, or a function of it),
    else a plain value."""
    where = dict(where or {})

    def measure(results: "RecipeResults") -> Measurement:
        values, counts, missing = results.probe_metric(group, probe, key, count_key, where=where, only=only)
        what = f"{group} {probe} {key}" + (f" ({', '.join(f'{k}={v}' for k, v in where.items())})" if where else "")
        what = _qualified(results, group, where, only, what)
        if count_key:
            return rate_measurement(values, counts, what, missing)
        return value_measurement(values, what, missing)

    return measure


def minus(a: Measure, b: Measure, what: str = "") -> Measure:
    """The difference of two measures (``a - b``), e.g. Transformer minus Mamba2 accuracy."""
    return lambda results: difference(a(results), b(results), what)


def share_of_cells(group: str, metric: str, predicate: Callable[[float], bool], predicate_text: str, *,
                   split: str = "test") -> Measure:
    """The fraction of a group's grid cells (mean over seeds) where ``predicate`` holds, with a
    Wilson interval over the cells: "fails nearly everywhere"."""

    def measure(results: "RecipeResults") -> Measurement:
        cells, missing = results.cell_means(group, metric, split=split)
        if not cells:
            return no_data("no finished cell", missing)
        hits = sum(1 for v in cells.values() if predicate(v))
        lo, hi = wilson(hits, len(cells))
        return Measurement(hits / len(cells), lo, hi,
                           f"share of {len(cells)} {group} cells with {split} {metric} {predicate_text} "
                           f"(cell = mean over seeds); Wilson 95% over cells",
                           [round(v, 4) for v in cells.values()], len(cells), missing)

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
            preconditions.append({"text": pre.text, "rule": pre.rule.text(), "measured": pm.text(),
                                  "verdict": pv, "measurement": pm.to_dict()})
            if pv != HELD and verdict != INCONCLUSIVE:
                verdict, why = INCONCLUSIVE, (f"precondition not met: {pre.text} (measured {pm.text()}, "
                                              f"needs {pre.rule.text()}); {claim.rule.text()} alone would "
                                              f"say {verdict}")
        rows.append({"preconditions": preconditions, "id": claim.id, "statement": claim.statement, "paper": claim.source.paper.label,
                     "where": claim.source.where, "paper_value": claim.source.value,
                     "measured_as": claim.measured_as, "rule": claim.rule.text(),
                     "measurement": m.to_dict(), "measured": m.text(), "verdict": verdict, "why": why})
    return rows
