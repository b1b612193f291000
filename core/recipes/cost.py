"""How long a recipe takes, estimated from measured training throughput (never guessed).

``throughput.json`` beside this module holds samples/s measured per (architecture, task, depth,
width, sequence length) on a device kind (``cpu``: one thread per run with as many runs at once
as cores, the way ``achilles reproduce`` trains on a CPU; ``cuda``: one run on one GPU). It is
written by ``benchmarks/recipe_throughput.py`` from the epochs of finished runs (their
metrics.jsonl records samples/s), so every number in it was timed on a real machine, which
the file names.

CPUs differ (cores, AVX-512, bf16 units), so the ``cpu`` kind holds one table per CPU model
string (``by_model``, keyed by /proc/cpuinfo's model name, each with the bf16 units the CPU had):
an estimate uses the table of the CPU it runs on, else the ``fallback`` table, and says which
(``table_for``, ``how_estimated``: "measured on this CPU" or "measured on <other CPU>"); shapes
this CPU's table lacks are taken from the fallback table, times this CPU's speed relative to it
(the median ratio over the shapes both measured), and count as scaled. An entry
may name its ``precision`` (absent: fp32); a bf16 estimate uses bf16 entries where there are any,
else the fp32 ones, and says so.

A run's time is ``train_samples x epochs / samples_per_s`` plus its per-epoch evaluation
(forward passes only, counted at a third of a training step per sample). A shape that was not
measured is scaled by layers x width² x length from the nearest measured shape of the same
architecture and task, else of the same architecture on another task, else of another
architecture on the same task, and marked as scaled; with no measurement of either the
architecture or the task the estimate is "not measured".
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from achilles.recipes.recipe import Plan, RunGroup

THROUGHPUT_FILE = Path(__file__).with_name("throughput.json")
DEVICE_KINDS = ("cpu", "cuda")
EVAL_COST = 1 / 3  # a forward pass, relative to a training step, per sample


@lru_cache(maxsize=1)
def throughput_table(path: str | None = None) -> dict[str, Any]:
    file = Path(path) if path else THROUGHPUT_FILE
    try:
        return json.loads(file.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


@dataclass(frozen=True)
class Shape:
    arch: str
    task: str
    n_layers: int
    d_model: int
    seq_len: int

    def work(self) -> float:
        return max(1, self.n_layers) * max(1, self.d_model) ** 2 * max(1, self.seq_len)


@dataclass
class Estimate:
    seconds: float | None      # wall seconds on the device kind (runs in parallel where they would be)
    scaled: bool = False       # some run's throughput was scaled from another shape
    unmeasured: int = 0        # runs with no measurement to go on

    def text(self) -> str:
        if self.seconds is None:
            return "not measured"
        s = self.seconds
        body = f"{s / 3600:.1f} h" if s >= 5400 else (f"{s / 60:.0f} min" if s >= 90 else f"{s:.0f} s")
        return ("~" if self.scaled else "") + body + (" (+ unmeasured runs)" if self.unmeasured else "")


def _tables(kind: str) -> tuple[dict[str, dict[str, Any]], str | None]:
    """({CPU model or machine: table}, the fallback's key) of a device kind; a table written before
    tables were kept per CPU model (``entries`` at the top) is the only one and the fallback."""
    section = throughput_table().get(kind) or {}
    if "by_model" in section:
        tables = {str(k): v for k, v in (section.get("by_model") or {}).items() if isinstance(v, dict)}
        return tables, section.get("fallback") if section.get("fallback") in tables else next(iter(tables), None)
    if section.get("entries"):
        key = str(section.get("cpu_model") or section.get("machine") or "?")
        return {key: section}, key
    return {}, None


def table_for(kind: str, cpu_model: str | None = None) -> tuple[dict[str, Any], str]:
    """(the throughput table an estimate on ``kind`` uses here, which one it is, in words). On a
    CPU: the table of this CPU's model string (``achilles.training.precision.cpu_description``), else the
    fallback table, "measured on <other CPU>"."""
    tables, fallback = _tables(kind)
    if not tables:
        return {}, f"{kind}: no throughput measured yet"
    if kind != "cpu":
        table = tables[fallback]
        return table, f"measured on {table.get('machine', fallback)}"
    if cpu_model is None:
        from achilles.training.precision import cpu_description

        cpu_model = cpu_description()["model"]
    if cpu_model in tables:
        return tables[cpu_model], f"measured on this CPU ({cpu_model})"
    table = tables[fallback]
    return table, f"measured on {table.get('cpu_model') or table.get('machine') or fallback}, not on this CPU ({cpu_model})"


def _key(e: dict[str, Any]) -> tuple:
    return e["arch"], e["task"], e["n_layers"], e["d_model"], e["seq_len"], e.get("precision", "fp32")


def borrowed(kind: str) -> tuple[list[dict[str, Any]], float, int]:
    """(the fallback table's entries for shapes this CPU's table lacks, each times the speed ratio of
    this CPU to that one, the ratio, how many shapes both measured). The ratio is the median of
    here/there over the shapes measured on both (1 when none are): a CPU measured on the atlas's
    mixers only still estimates figure 4 from the other CPU's composite runs, at its own speed."""
    import statistics

    tables, fallback = _tables(kind)
    table, which = table_for(kind)
    if kind != "cpu" or not which.startswith("measured on this CPU") or fallback is None:
        return [], 1.0, 0
    other = tables[fallback]
    if other is table:
        return [], 1.0, 0
    here = {_key(e): e for e in table.get("entries") or []}
    there = {_key(e): e for e in other.get("entries") or []}
    common = [k for k in here if k in there and there[k]["samples_per_s"] > 0]
    ratio = statistics.median(here[k]["samples_per_s"] / there[k]["samples_per_s"] for k in common) if common else 1.0
    extra = [{**e, "samples_per_s": e["samples_per_s"] * ratio, "borrowed": True}
             for k, e in there.items() if k not in here]
    return extra, ratio, len(common)


def _entries(kind: str, precision: str | None = None) -> list[dict[str, Any]]:
    entries = list(table_for(kind)[0].get("entries") or []) + borrowed(kind)[0]
    if precision == "bf16":
        bf16 = [e for e in entries if e.get("precision") == "bf16"]
        if bf16:
            return bf16
    return [e for e in entries if e.get("precision", "fp32") == "fp32"]


def samples_per_second(shape: Shape, kind: str, precision: str | None = None) -> tuple[float | None, bool]:
    """(samples/s, scaled?) for ``shape`` on device ``kind`` (bf16 measurements for ``precision``
    bf16 where the table has them, else the fp32 ones)."""
    entries = _entries(kind, precision)
    same = [e for e in entries if e["arch"] == shape.arch and e["task"] == shape.task]
    for e in same:
        if (e["n_layers"], e["d_model"], e["seq_len"]) == (shape.n_layers, shape.d_model, shape.seq_len):
            return float(e["samples_per_s"]), bool(e.get("borrowed"))
    # nearest: the same architecture on another shape of the task, else on another task (its cost per
    # unit of work is its own: mamba1's per-channel scan runs 2-4x slower than mamba2's SSD), else
    # another architecture on the task
    pool = (same or [e for e in entries if e["arch"] == shape.arch]
            or [e for e in entries if e["task"] == shape.task])
    if not pool:
        return None, False

    def distance(e):
        return abs(Shape(e["arch"], e["task"], e["n_layers"], e["d_model"], e["seq_len"]).work() - shape.work())

    near = min(pool, key=distance)
    measured = Shape(near["arch"], near["task"], near["n_layers"], near["d_model"], near["seq_len"])
    return float(near["samples_per_s"]) * measured.work() / shape.work(), True


def _factory_defaults(arch: str) -> dict[str, Any]:
    """The keyword defaults of an architecture's factory (its n_layers and d_model when unset)."""
    import inspect

    from achilles.contract.lookup import registry

    try:
        params = inspect.signature(registry("architecture").get(arch).factory).parameters
    except (TypeError, ValueError):
        return {}
    return {k: p.default for k, p in params.items() if p.default is not inspect.Parameter.empty}


def group_shapes(group: RunGroup) -> list[tuple[Shape, int]]:
    """(shape, number of runs) for each distinct shape of a group's grid."""
    import itertools

    from achilles.contract.lookup import registry, get_task

    task_cls = registry("task").get(group.task).factory
    base = {**_factory_defaults(group.arch), **getattr(task_cls, "model_defaults", {}), **dict(group.model)}
    axes = list(group.grid)
    out: dict[Shape, int] = {}
    for combo in itertools.product(*(group.grid[a] for a in axes)) if axes else [()]:
        values = dict(zip(axes, combo))
        model = {**base, **{k: v for k, v in values.items() if "." not in k}}
        task_settings = {**dict(group.task_settings), **{k[5:]: v for k, v in values.items() if k.startswith("task.")}}
        n_layers = int(model.get("n_layers", 2))
        for setting in getattr(task_cls, "model_settings", ()):
            task_settings.setdefault(setting, model.get(setting, n_layers if setting == "n_layers" else None))
        try:
            seq_len = get_task(group.task, **task_settings).seq_len
        except Exception:  # a setting only the model resolves: size by the defaults
            seq_len = get_task(group.task).seq_len
        shape = Shape(group.arch, group.task, n_layers, int(model.get("d_model", 32)), int(seq_len))
        out[shape] = out.get(shape, 0) + group.seeds
    return list(out.items())


def estimate_plan(plan: Plan, kind: str, workers: int = 1, pending_only: dict[str, int] | None = None) -> Estimate:
    """Wall time of ``plan`` on device ``kind`` with ``workers`` runs at once."""
    from achilles.recipes.report import group_budget

    total, scaled, unmeasured = 0.0, False, 0
    for group in plan.runs:
        budget = group_budget(group, plan)
        samples = budget["train_samples"] or 0
        evals = (budget["eval_samples"] or 2000) * 2  # two evaluated splits at least
        precision = budget.get("precision")
        if precision in (None, "default"):  # as the trainer defaults: bf16 for paper on a GPU
            precision = "bf16" if kind == "cuda" and plan.training_profile == "paper" else "fp32"
        for shape, runs in group_shapes(group):
            if pending_only is not None:
                runs = min(runs, pending_only.get(group.name, runs))
            sps, was_scaled = samples_per_second(shape, kind, precision)
            if sps is None:
                unmeasured += runs
                continue
            scaled |= was_scaled
            total += runs * budget["epochs"] * (samples + EVAL_COST * evals) / sps
    if unmeasured and total == 0:
        return Estimate(None, scaled, unmeasured)
    return Estimate(total / max(1, workers), scaled, unmeasured)


def how_estimated(kind: str) -> str:
    """Which table the estimates on ``kind`` come from: the machine, whether it is this CPU, its bf16
    units and how the runs were trained."""
    table, which = table_for(kind)
    if not table.get("entries"):
        return f"{kind}: no throughput measured yet"
    units = table.get("bf16_units")
    bf16 = ("" if kind != "cpu" else "; bf16 units when measured: " + (
        "not recorded" if units is None else (", ".join(units) or "none")))
    precisions = sorted({e.get("precision", "fp32") for e in table.get("entries") or []})
    extra, ratio, common = borrowed(kind)
    other = (f"; shapes not measured here from {_tables(kind)[1]}'s table times {ratio:.2f} (this CPU's speed "
             f"relative to it, median over {common} shapes measured on both)" if extra else "")
    return (f"{kind}: {which} [{table.get('machine', '?')}{bf16}; {'/'.join(precisions)} runs]; "
            f"{table.get('how', '')}{other}").strip("; ")
