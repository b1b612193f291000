"""Statistics of claims: measurements, their intervals, and the rules that turn them into verdicts.

A claim's number is a ``Measurement``: a value with a 95% interval, the per-run values it was
computed from (``per_run``: one entry per run, with the run's label, seed, distinct sample count
and the key that pairs it with the other side of a comparison) and words saying what ``n``
counts. A ``Rule`` turns it into a verdict:

* ``held``          the whole interval satisfies the rule;
* ``not held``      the whole interval violates it;
* ``inconclusive``  the interval straddles the rule's threshold, runs the claim needs are
                    missing, too few runs met its premise, or the profile is too small to decide.

Intervals (every one is 95%, and ``report.json`` keeps what is needed to recompute it):

* a rate over **two or more runs**: Student t on the per-run values (each run is an independent
  replicate: seed ``s`` draws its own data), floored at the Wilson half-width of one run's own
  samples so that identical runs (all 1.000) do not give a zero-width interval;
* a rate from **one run**: Wilson over that run's distinct samples (never pooled across runs);
* a difference of two sides that **share their data** run by run (same seed, task, settings and
  sample counts: seed ``s`` of both sides drew the same samples): t on the paired differences;
* any other difference: Welch's t on the two sides' per-run values, or, when a side has a single
  run, the conservative ``[a.lo − b.hi, a.hi − b.lo]``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

if TYPE_CHECKING:  # pragma: no cover
    from achilles.recipes.recipe_results import RunRecord

HELD, NOT_HELD, INCONCLUSIVE = "held", "not held", "inconclusive"
VERDICTS = (HELD, NOT_HELD, INCONCLUSIVE)
Z95 = 1.959964
#: two-sided 95% Student t quantiles by degrees of freedom (1..30); above 30 the normal one
_T95 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
        2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
        2.045, 2.042)


def t95(dof: float) -> float:
    """The two-sided 95% t quantile; fractional (Welch) degrees of freedom round down (wider)."""
    d = int(math.floor(dof))
    return _T95[d - 1] if 1 <= d <= len(_T95) else (Z95 if d > len(_T95) else _T95[0])


def wilson(successes: float, n: float) -> tuple[float, float]:
    """95% Wilson score interval of a binomial rate (``successes`` may be fractional: a rate
    times its count)."""
    if n <= 0:
        return 0.0, 1.0
    p = min(1.0, max(0.0, successes / n))
    denom = 1 + Z95 ** 2 / n
    centre = (p + Z95 ** 2 / (2 * n)) / denom
    half = Z95 * math.sqrt(p * (1 - p) / n + Z95 ** 2 / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def _mean_sd(values: Sequence[float]) -> tuple[float, float]:
    mean = sum(values) / len(values)
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return mean, sd


def seed_interval(values: Sequence[float]) -> tuple[float, float] | None:
    """Mean ± t·sd/√n across runs (None with fewer than two values)."""
    if len(values) < 2:
        return None
    mean, sd = _mean_sd(values)
    half = t95(len(values) - 1) * sd / math.sqrt(len(values))
    return mean - half, mean + half


@dataclass
class Measurement:
    """A measured value with its 95% interval.

    ``per_run``: the values it was computed from, one dict per run (``run``, ``seed``, ``value``,
    ``n`` distinct samples or None, ``pair`` the pairing key); ``sides``: for a difference, the two
    measurements it subtracts; ``counts``: what n counts, in words; ``interval``: how the interval
    was formed, by name (``t``, ``wilson``, ``paired-t``, ``welch``, ``bounds``, ``none``)."""

    value: float | None
    lo: float | None
    hi: float | None
    method: str
    per_run: list[dict[str, Any]] = field(default_factory=list)
    samples: int | None = None
    missing: list[str] = field(default_factory=list)
    counts: str = ""
    interval: str = "none"
    sides: dict[str, "Measurement"] = field(default_factory=dict)
    #: why the claim cannot be decided at this size whatever the runs give (e.g. too few cells)
    undecidable: str = ""
    kind: str = "rate"  # rate | value | difference | share

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
        d = {"value": self.value, "lo": self.lo, "hi": self.hi, "method": self.method, "kind": self.kind,
             "interval": self.interval, "counts": self.counts, "per_run": self.per_run, "samples": self.samples,
             "missing": self.missing}
        if self.sides:
            d["sides"] = {k: m.to_dict() for k, m in self.sides.items()}
        if self.undecidable:
            d["undecidable"] = self.undecidable
        return d


def no_data(why: str, missing: list[str] | None = None) -> Measurement:
    return Measurement(None, None, None, why, missing=list(missing or []), interval="none")


def observation(run: "RunRecord | None", value: float, n: int | None = None, pair: Any = None) -> dict[str, Any]:
    """One run's contribution to a measurement (what report.json keeps per run)."""
    if run is None:
        return {"run": "", "seed": None, "value": float(value), "n": n, "pair": pair}
    return {"run": run.label, "seed": run.seed, "value": float(value), "n": n,
            "pair": pair if pair is not None else run.pair_key, "data_pair": run.data_pair_key}


def _obs(values: Sequence[float], counts: Sequence[int] | None, obs: Sequence[dict] | None) -> list[dict]:
    if obs is not None:
        return list(obs)
    counts = list(counts) if counts is not None else [None] * len(values)
    return [{"run": f"run {i}", "seed": i, "value": float(v), "n": (int(c) if c is not None else None),
             "pair": f"run {i}"} for i, (v, c) in enumerate(zip(values, counts))]


def _counts_text(obs: Sequence[dict], kind: str) -> str:
    runs = len(obs)
    ns = sorted({o["n"] for o in obs if o.get("n")})
    if not ns:
        return f"n = {runs} run{'s' if runs != 1 else ''} (independent replicates)"
    per = f"{ns[0]:,}" if len(ns) == 1 else f"{ns[0]:,}-{ns[-1]:,}"
    return (f"n = {runs} run{'s' if runs != 1 else ''} (independent replicates), each scored on {per} distinct "
            f"samples")


def rate_measurement(rates: Sequence[float], counts: Sequence[int], what: str = "",
                     missing: Sequence[str] = (), obs: Sequence[dict] | None = None) -> Measurement:
    """The mean of per-run rates: t across runs (two or more), Wilson within one run (one)."""
    observations = _obs(rates, counts, obs)
    values = [o["value"] for o in observations]
    prefix = (what + "; ") if what else ""
    if not values or any(math.isnan(v) for v in values):
        return no_data(prefix + "no finished run reports this metric", list(missing))
    mean = sum(values) / len(values)
    counts_text = _counts_text(observations, "rate")
    if len(values) == 1:
        n = observations[0].get("n") or 0
        lo, hi = wilson(mean * n, n)
        return Measurement(mean, lo, hi, prefix + f"one run: Wilson 95% over its {n:,} distinct samples",
                           observations, n, list(missing), counts_text, "wilson")
    t_lo, t_hi = seed_interval(values)
    n_min = min((o.get("n") or 0) for o in observations)
    w_lo, w_hi = wilson(mean * n_min, n_min) if n_min else (mean, mean)
    lo, hi = max(0.0, min(t_lo, w_lo)), min(1.0, max(t_hi, w_hi))
    return Measurement(mean, lo, hi, prefix + f"mean of {len(values)} runs; 95% across-run t (floored at one "
                       f"run's Wilson width)", observations, None, list(missing), counts_text, "t")


def value_measurement(values: Sequence[float], what: str = "", missing: Sequence[str] = (),
                      obs: Sequence[dict] | None = None) -> Measurement:
    """The mean of per-run values (not rates) with an across-run t interval (none for one run)."""
    observations = _obs(values, None, obs)
    values = [o["value"] for o in observations]
    prefix = (what + "; ") if what else ""
    if not values or any(math.isnan(v) for v in values):
        return no_data(prefix + "no finished run reports this value", list(missing))
    mean = sum(values) / len(values)
    spread = seed_interval(values)
    how = f"mean of {len(values)} runs; 95% across-run t" if spread else "one run: no interval"
    lo, hi = spread if spread else (None, None)
    return Measurement(mean, lo, hi, prefix + how, observations, None, list(missing),
                       _counts_text(observations, "value"), "t" if spread else "none", kind="value")


def difference(a: Measurement, b: Measurement, what: str = "") -> Measurement:
    """``a - b``: paired t when the two sides' runs pair one to one on the same data, Welch's t
    when both sides have two or more runs, else the conservative interval of the two sides'."""
    missing = a.missing + b.missing
    prefix = (what + "; ") if what else ""
    if a.value is None or b.value is None:
        empty = a if a.value is None else b
        return no_data(prefix + f"a side of the comparison has no data ({empty.method})", missing)
    sides = {"a": a, "b": b}
    pa, pb, paired = _pairs(a.per_run, b.per_run, "pair")
    if not paired:
        pa, pb, paired = _pairs(a.per_run, b.per_run, "data_pair")
    if paired:
        keys = list(pa)
        diffs = [{"run": f"{pa[k]['run']} − {pb[k]['run']}", "seed": pa[k].get("seed"),
                  "value": pa[k]["value"] - pb[k]["value"], "n": pa[k].get("n"), "pair": k} for k in keys]
        values = [d["value"] for d in diffs]
        mean = sum(values) / len(values)
        lo, hi = seed_interval(values)
        return Measurement(mean, lo, hi, prefix + f"paired difference over {len(values)} runs that share their "
                           "data (same seed and settings); 95% t on the paired differences", diffs, None, missing,
                           f"n = {len(values)} pairs of runs on the same data", "paired-t", sides, kind="difference")
    va, vb = [o["value"] for o in a.per_run], [o["value"] for o in b.per_run]
    if len(va) >= 2 and len(vb) >= 2:
        (ma, sa), (mb, sb) = _mean_sd(va), _mean_sd(vb)
        se2a, se2b = sa * sa / len(va), sb * sb / len(vb)
        se = math.sqrt(se2a + se2b)
        dof = ((se2a + se2b) ** 2 / ((se2a ** 2) / (len(va) - 1) + (se2b ** 2) / (len(vb) - 1))
               if se2a + se2b > 0 else len(va) + len(vb) - 2)
        half = t95(dof) * se
        # floor: never narrower than one run's sampling error on either side
        floor = max(_wilson_half(a), _wilson_half(b))
        half = max(half, floor)
        mean = ma - mb
        return Measurement(mean, mean - half, mean + half,
                           prefix + f"difference of {len(va)} and {len(vb)} independent runs; 95% Welch t "
                           f"({dof:.1f} dof)", [], None, missing,
                           f"n = {len(va)} vs {len(vb)} independent runs", "welch", sides, kind="difference")
    lo = a.lo - b.hi if a.lo is not None and b.hi is not None else None
    hi = a.hi - b.lo if a.hi is not None and b.lo is not None else None
    return Measurement(a.value - b.value, lo, hi,
                       prefix + "difference; 95%: from the two sides' intervals (a side has one run)",
                       [], None, missing, f"n = {len(va)} vs {len(vb)} runs", "bounds", sides, kind="difference")


def _pairs(a: list[dict], b: list[dict], key: str) -> tuple[dict, dict, bool]:
    """The two sides keyed by ``key``, and whether they pair one to one (two or more pairs)."""
    pa = {_hashable(o.get(key)): o for o in a}
    pb = {_hashable(o.get(key)): o for o in b}
    ok = (len(a) >= 2 and len(pa) == len(a) and len(pb) == len(b) and set(pa) == set(pb) and None not in pa)
    return pa, pb, ok


def _hashable(x: Any) -> Any:
    return tuple(_hashable(v) for v in x) if isinstance(x, list) else x


def _wilson_half(m: Measurement) -> float:
    """Half the Wilson width of one run of ``m`` at its mean (0 for values that are not rates)."""
    ns = [o.get("n") for o in m.per_run if o.get("n")]
    if not ns or m.value is None or m.kind != "rate":
        return 0.0
    lo, hi = wilson(m.value * min(ns), min(ns))
    return (hi - lo) / 2


# -- rules -----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Rule:
    """``op`` ">=" / "<=": the claim holds when the measured value is on that side of ``threshold``
    over its whole interval; ``op`` "within": when the whole interval lies in [threshold, upper]
    (and is not held when the whole interval lies outside it). ``basis`` says where the number
    comes from (the paper's value, chance, a stated minimum effect)."""

    op: str
    threshold: float
    upper: float | None = None
    basis: str = ""

    def text(self) -> str:
        if self.op == "within":
            body = f"within [{self.threshold:g}, {self.upper:g}]"
        else:
            body = f"{'≥' if self.op == '>=' else '≤'} {self.threshold:g}"
        return body + (f" ({self.basis})" if self.basis else "")

    def to_dict(self) -> dict[str, Any]:
        return {"op": self.op, "threshold": self.threshold, "upper": self.upper, "basis": self.basis}

    def decided_by(self, lo: float, hi: float) -> bool:
        """Whether an interval [lo, hi] gives this rule a verdict (held or not held), as ``verdict`` judges."""
        return self.verdict(Measurement(value=lo, lo=lo, hi=hi, method=""))[0] != INCONCLUSIVE

    def verdict(self, m: Measurement) -> tuple[str, str]:
        """(verdict, why)."""
        if m.value is None:
            return INCONCLUSIVE, m.method
        if m.missing:
            return INCONCLUSIVE, f"{len(m.missing)} run(s) missing: " + ", ".join(m.missing[:4])
        lo = m.lo if m.lo is not None else m.value
        hi = m.hi if m.hi is not None else m.value
        if self.op == "within":
            a, b = self.threshold, self.upper
            if a <= lo and hi <= b:
                return HELD, f"the whole interval lies within [{a:g}, {b:g}]"
            if hi < a or lo > b:
                return NOT_HELD, f"the whole interval lies outside [{a:g}, {b:g}]"
            return INCONCLUSIVE, f"the interval straddles the band [{a:g}, {b:g}]"
        ok = (lambda x: x >= self.threshold) if self.op == ">=" else (lambda x: x <= self.threshold)
        if ok(lo) and ok(hi):
            if m.undecidable:  # cannot happen when undecidable is computed right; stay honest if it does
                return HELD, f"the whole interval is {self.text()}"
            return HELD, f"the whole interval is {self.text()}"
        if not ok(lo) and not ok(hi):
            return NOT_HELD, f"the whole interval misses {self.text()}"
        if m.undecidable:
            return INCONCLUSIVE, f"the interval straddles {self.threshold:g}; {m.undecidable}"
        return INCONCLUSIVE, f"the interval straddles {self.threshold:g}"


def at_least(threshold: float, basis: str = "") -> Rule:
    return Rule(">=", threshold, basis=basis)


def at_most(threshold: float, basis: str = "") -> Rule:
    return Rule("<=", threshold, basis=basis)


def within(low: float, high: float, basis: str = "") -> Rule:
    return Rule("within", low, high, basis)


def near_chance(chance: float, band: float, why: str) -> Rule:
    """"At chance": a two-sided band ``chance ± band``; ``why`` justifies the width."""
    return within(round(chance - band, 6), round(chance + band, 6), f"chance {chance:g} ± {band:g}: {why}")




def runs_to_decide(m: Measurement, rule: Rule) -> str:
    """How many runs (or samples, or cells) would narrow ``m``'s interval enough to clear the rule's
    nearest edge if its mean held: a t interval's half-width shrinks as 1/√n; a Wilson interval,
    lopsided near 0 and 1, is recomputed at each larger n (4 of 4 cells needs 12, not 4)."""
    if m.value is None or m.lo is None or m.hi is None:
        return ""
    edges = [rule.threshold] + ([rule.upper] if rule.op == "within" and rule.upper is not None else [])
    gap = min(abs(m.value - e) for e in edges)
    half = (m.hi - m.lo) / 2
    if m.interval == "wilson":
        unit, n = "distinct samples in the one run", max(1, m.samples or 1)
    elif m.interval == "wilson-cells":
        unit, n = "cells", max(1, len(m.per_run))
    elif m.interval in ("welch", "bounds"):
        unit = "runs per side"
        n = max(1, min(len(s.per_run) for s in m.sides.values()) if m.sides else 1)
    else:
        unit, n = "runs", max(1, len(m.per_run))
    if gap < 1e-9 * max(1.0, abs(m.value)) or half <= 0:
        return "the mean sits on the threshold: more runs alone would not decide it"
    if m.interval in ("wilson", "wilson-cells"):
        rate = min(1.0, max(0.0, m.value))
        need = next((k for k in range(n + 1, 20 * n + 1) if rule.decided_by(*wilson(rate * k, k))), 20 * n + 1)
    else:
        need = math.ceil(n * (half / gap) ** 2)
    if need > 20 * n:
        return (f"the mean is {gap:.3f} from the threshold: about {need} {unit} (now {n}) would be needed, "
                "more than this profile can spend")
    return f"about {need} {unit} (now {n}) would decide it if the mean held"
