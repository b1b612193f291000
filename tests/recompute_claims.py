"""An independent recomputation of a report's claims from its report.json alone.

Written apart from ``achilles.recipes.measure`` on purpose (its own t quantiles from the t
distribution's CDF, its own Wilson interval, its own verdict logic): a reader's check that every
number and verdict in a report follows from the per-run values it lists. Used by
tests/test_report_recompute.py on the committed reports and on a report made in the test."""

from __future__ import annotations

import math
from typing import Any

Z = 1.959963984540054
TOLERANCE = 2e-3  # the package's t table is rounded to 3 decimals


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the regularized incomplete beta function (modified Lentz)."""
    tiny, qab, qap, qam = 1e-300, a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        step = d * c
        h *= step
        if abs(step - 1.0) < 1e-14:
            break
    return h


def _betai(a: float, b: float, x: float) -> float:
    if x <= 0:
        return 0.0
    if x >= 1:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log(1 - x))
    if x < (a + 1) / (a + b + 2):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1 - x) / b


def t_quantile_975(dof: float) -> float:
    """The 97.5% quantile of Student's t with ``dof`` degrees of freedom, by bisection on its CDF."""
    if dof > 30:
        return Z
    lo, hi = 0.0, 100.0
    for _ in range(200):
        mid = (lo + hi) / 2
        tail = 0.5 * _betai(dof / 2, 0.5, dof / (dof + mid * mid))  # P(T > mid)
        lo, hi = (mid, hi) if tail > 0.025 else (lo, mid)
    return (lo + hi) / 2


def wilson(k: float, n: float) -> tuple[float, float]:
    if n <= 0:
        return 0.0, 1.0
    p = min(1.0, max(0.0, k / n))
    centre = (p + Z * Z / (2 * n)) / (1 + Z * Z / n)
    half = Z / (1 + Z * Z / n) * math.sqrt(p * (1 - p) / n + Z * Z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def t_interval(values: list[float]) -> tuple[float, float]:
    n = len(values)
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = t_quantile_975(n - 1) * sd / math.sqrt(n)
    return mean - half, mean + half


def recompute(m: dict[str, Any]) -> tuple[float | None, float | None, float | None]:
    """(value, lo, hi) of a measurement from its per-run values (and its sides')."""
    if m.get("value") is None:
        return None, None, None
    kind, obs = m["interval"], m.get("per_run") or []
    values = [o["value"] for o in obs]
    if kind == "wilson":
        (o,) = obs
        return o["value"], *wilson(o["value"] * o["n"], o["n"])
    if kind == "wilson-cells":
        hits = sum(1 for o in obs if o["hit"])
        return hits / len(obs), *wilson(hits, len(obs))
    if kind == "none":
        (o,) = obs
        return o["value"], None, None
    if kind == "t":
        mean = sum(values) / len(values)
        lo, hi = t_interval(values)
        if m.get("kind") == "rate":  # floored at one run's Wilson width, clipped to [0, 1]
            n = min(o["n"] for o in obs)
            wlo, whi = wilson(mean * n, n)
            lo, hi = max(0.0, min(lo, wlo)), min(1.0, max(hi, whi))
        return mean, lo, hi
    sides = {k: recompute(v) for k, v in (m.get("sides") or {}).items()}
    (va, la, ha), (vb, lb, hb) = sides["a"], sides["b"]
    if kind == "paired-t":
        a = {o["pair"]: o["value"] for o in m["sides"]["a"]["per_run"]} if obs and obs[0]["pair"] in {
            x["pair"] for x in m["sides"]["a"]["per_run"]} else {o["data_pair"]: o["value"] for o in m["sides"]["a"]["per_run"]}
        b = {o["pair"]: o["value"] for o in m["sides"]["b"]["per_run"]} if obs and obs[0]["pair"] in {
            x["pair"] for x in m["sides"]["b"]["per_run"]} else {o["data_pair"]: o["value"] for o in m["sides"]["b"]["per_run"]}
        diffs = [a[o["pair"]] - b[o["pair"]] for o in obs]
        assert all(abs(d - o["value"]) < 1e-9 for d, o in zip(diffs, obs)), "a paired difference does not match its sides"
        return sum(diffs) / len(diffs), *t_interval(diffs)
    if kind == "welch":
        a = [o["value"] for o in m["sides"]["a"]["per_run"]]
        b = [o["value"] for o in m["sides"]["b"]["per_run"]]
        ma, mb = sum(a) / len(a), sum(b) / len(b)
        va_ = sum((x - ma) ** 2 for x in a) / (len(a) - 1) / len(a)
        vb_ = sum((x - mb) ** 2 for x in b) / (len(b) - 1) / len(b)
        dof = ((va_ + vb_) ** 2 / (va_ ** 2 / (len(a) - 1) + vb_ ** 2 / (len(b) - 1))
               if va_ + vb_ > 0 else len(a) + len(b) - 2)
        half = t_quantile_975(math.floor(dof)) * math.sqrt(va_ + vb_)

        def one_run_half(side: dict) -> float:
            ns = [o["n"] for o in side["per_run"] if o.get("n")]
            if not ns or side.get("kind") != "rate":
                return 0.0
            lo_, hi_ = wilson(side["value"] * min(ns), min(ns))
            return (hi_ - lo_) / 2

        half = max(half, one_run_half(m["sides"]["a"]), one_run_half(m["sides"]["b"]))
        return ma - mb, ma - mb - half, ma - mb + half
    if kind == "bounds":
        lo = la - hb if la is not None and hb is not None else None
        hi = ha - lb if ha is not None and lb is not None else None
        return va - vb, lo, hi
    raise AssertionError(f"unknown interval kind {kind!r}")


def verdict(rule: dict[str, Any], m: dict[str, Any]) -> str:
    """The verdict a rule gives a measurement, from the reported value and interval."""
    if m.get("value") is None or m.get("missing"):
        return "inconclusive"
    lo = m["lo"] if m["lo"] is not None else m["value"]
    hi = m["hi"] if m["hi"] is not None else m["value"]
    if rule["op"] == "within":
        if rule["threshold"] <= lo and hi <= rule["upper"]:
            return "held"
        if hi < rule["threshold"] or lo > rule["upper"]:
            return "not held"
        return "inconclusive"
    inside = [x >= rule["threshold"] if rule["op"] == ">=" else x <= rule["threshold"] for x in (lo, hi)]
    return "held" if all(inside) else "not held" if not any(inside) else "inconclusive"


def check_claim(claim: dict[str, Any]) -> list[str]:
    """What does not recompute in one claim (empty when everything does)."""
    problems = []

    def close(a, b) -> bool:
        return (a is None and b is None) or (a is not None and b is not None and abs(a - b) <= TOLERANCE)

    for label, m, rule, said in [("claim", claim["measurement"], claim["rule_spec"], None)] + [
            (f"precondition {p['text']!r}", p["measurement"], p["rule_spec"], p["verdict"])
            for p in claim.get("preconditions", [])]:
        try:
            value, lo, hi = recompute(m)
        except AssertionError as exc:
            problems.append(f"{claim['id']} {label}: {exc}")
            continue
        if not (close(value, m["value"]) and close(lo, m["lo"]) and close(hi, m["hi"])):
            problems.append(f"{claim['id']} {label}: report says {m['value']} [{m['lo']}, {m['hi']}], "
                            f"recomputed {value} [{lo}, {hi}]")
        if said is not None and verdict(rule, m) != said:
            problems.append(f"{claim['id']} {label}: verdict {said!r}, recomputed {verdict(rule, m)!r}")
    expected = verdict(claim["rule_spec"], claim["measurement"])
    if expected != "inconclusive" and any(p["verdict"] != "held" for p in claim.get("preconditions", [])):
        expected = "inconclusive"
    if expected != claim["verdict"]:
        problems.append(f"{claim['id']}: verdict {claim['verdict']!r}, recomputed {expected!r}")
    return problems
