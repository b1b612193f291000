"""The results of a recipe's runs, read back from their run folders: what claims and figures see.

A recipe's output folder holds one sweep folder per run group (``runs/<group>/``), each cell an
ordinary run folder with ``evals/<name>.json`` (extra evaluations) and ``probes/<probe>/`` (probe
outputs) beside its weights. ``RecipeResults`` reads them all once and answers questions such as
"the final test accuracy of every finished ``mamba2`` run at gamma 1.0", saying which runs are
missing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from achilles.runs.folder import RunFolder
from achilles.runs.layout import EVALS_DIR, PROBES_DIR
from achilles.recipes.recipe import Plan, Recipe


@dataclass(frozen=True)
class Selector:
    """Which finished runs a measurement uses, e.g. only those that learned the composite
    solution: ``Selector("43 composite ≥ 0.8", lambda run: run.final("test", "acc_43_composite") >= 0.8)``.
    Runs it leaves out are not missing: the measurement says how many qualified."""

    text: str
    test: Callable[["RunRecord"], bool]


@dataclass
class RunRecord:
    """One run of a recipe: its group, grid values, seed, status and everything measured on it."""

    group: str
    values: dict[str, Any]
    seed: int
    path: Path
    status: str
    config: dict[str, Any] = field(default_factory=dict)
    evals: dict[str, dict] = field(default_factory=dict)    # name -> {"samples": n, "metrics": {split: {...}}}
    probes: dict[str, dict] = field(default_factory=dict)   # probe -> its result JSON

    @property
    def finished(self) -> bool:
        return self.status == "finished"

    @property
    def label(self) -> str:
        cell = ",".join(f"{k}={v}" for k, v in self.values.items())
        return f"{self.group}[{cell + ',' if cell else ''}seed={self.seed}]"

    def final(self, split: str, metric: str) -> float:
        """The final ``split.metric`` (NaN when the run reports none)."""
        value = _lookup(self.config.get("final_metrics") or {}, f"{split}.{metric}")
        return float("nan") if value is None else float(value)

    @property
    def data_seed(self) -> Any:
        """The seed the run's data was drawn from (old runs without one recorded used 0)."""
        training = self.config.get("training") or {}
        seed = training.get("data_seed", 0)
        return self.config.get("seed", self.seed) if seed is None else seed

    @property
    def data_pair_key(self) -> str:
        """Equal for two runs that trained and were evaluated on the same samples with the same seed:
        the key that pairs the two sides of a like-with-like comparison."""
        training = self.config.get("training") or {}
        return json.dumps([self.config.get("task"), self.config.get("task_config") or {}, self.data_seed,
                           training.get("train_samples"), training.get("eval_samples"), self.seed],
                          sort_keys=True, default=str)

    @property
    def pair_key(self) -> str:
        """``data_pair_key`` and the run's grid cell (pairs runs cell by cell across groups)."""
        return self.data_pair_key + "|" + json.dumps(self.values, sort_keys=True, default=str)

    def matches(self, where: Mapping[str, Any]) -> bool:
        return all(_same(self.values.get(k, self.setting(k)), v) for k, v in where.items())

    def setting(self, name: str) -> Any:
        """A model setting (``gamma``), task setting (``task.X``) or training setting (``train.X``)."""
        if name.startswith("task."):
            return (self.config.get("task_config") or {}).get(name[5:])
        if name.startswith("train."):
            return (self.config.get("training") or {}).get(name[6:])
        return (self.config.get("model") or {}).get(name)

    def eval_samples(self, split: str) -> int:
        """How many samples the final metrics of ``split`` were computed on."""
        training = self.config.get("training") or {}
        if training.get("eval_samples"):
            return int(training["eval_samples"])
        from achilles.contract.lookup import get_task

        sizes = get_task(self.config["task"], **(self.config.get("task_config") or {})).split_sizes()
        if split == "train":
            return min(int(training.get("train_samples") or sizes["train"]), 10_000)
        return int(sizes.get(split, 0))


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return abs(float(a) - float(b)) < 1e-9
    return a == b


def _lookup(data: Any, path: str) -> Any:
    """``data["a"]["b"]`` for the dotted ``path`` "a.b" (keys may themselves hold no dots)."""
    for part in path.split("."):
        if not isinstance(data, dict) or part not in data:
            return None
        data = data[part]
    return data


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


class RecipeResults:
    """Every run of a recipe's plan, read from ``folder``."""

    def __init__(self, recipe: Recipe, profile: str, plan: Plan, folder: Path, runs: list[RunRecord]):
        self.recipe, self.profile, self.plan, self.folder, self.runs = recipe, profile, plan, Path(folder), runs

    # -- selection -------------------------------------------------------------------------------
    def group(self, name: str, where: Mapping[str, Any] | None = None) -> list[RunRecord]:
        if name not in {g.name for g in self.plan.runs}:
            raise KeyError(f"recipe {self.recipe.name!r} has no run group {name!r}")
        return [r for r in self.runs if r.group == name and r.matches(where or {})]

    def selected(self, name: str, where: Mapping[str, Any] | None = None,
                 only: Selector | None = None) -> tuple[list[RunRecord], list[str], str]:
        """(finished runs of ``name`` matching ``where`` and ``only``, missing runs, a note saying
        how many ``only`` kept)."""
        runs = self.group(name, where)
        missing = [f"{r.label} ({r.status})" for r in runs if not r.finished]
        finished = [r for r in runs if r.finished]
        if only is None:
            return finished, missing, ""
        kept = [r for r in finished if only.test(r)]
        return kept, missing, f"{len(kept)} of {len(finished)} finished runs qualify ({only.text})"

    @property
    def missing(self) -> list[RunRecord]:
        return [r for r in self.runs if not r.finished]

    # -- numbers ---------------------------------------------------------------------------------
    def metric(self, group: str, metric: str, *, split: str = "test", eval: str | None = None,
               where: Mapping[str, Any] | None = None, only: Selector | None = None
               ) -> tuple[list[float], list[int], list[str]]:
        """(values, sample counts, missing runs) of the final ``split.metric`` (or of evaluation
        ``eval``) over the finished runs of ``group`` matching ``where`` and ``only``."""
        obs, missing = self.observations(group, metric, split=split, eval=eval, where=where, only=only)
        return [o["value"] for o in obs], [o["n"] for o in obs], missing

    def observations(self, group: str, metric: str, *, split: str = "test", eval: str | None = None,
                     where: Mapping[str, Any] | None = None, only: Selector | None = None, share: float = 1.0
                     ) -> tuple[list[dict[str, Any]], list[str]]:
        """Per-run observations (run, seed, value, distinct samples ``n``, pairing keys) of the final
        ``split.metric`` (or of evaluation ``eval``); ``share``: the fraction of the split's samples
        the metric counts. Also the missing runs."""
        from achilles.recipes.statistics import observation

        obs, missing = [], []
        runs, missing, _ = self.selected(group, where, only)
        for run in runs:
            if eval is not None:
                record = run.evals.get(eval)
                value = _lookup(record, f"metrics.{split}.{metric}") if record else None
                count = int(record.get("samples") or 0) if record else 0
            else:
                value = _lookup(run.config.get("final_metrics") or {}, f"{split}.{metric}")
                count = run.eval_samples(split)
            if value is None:
                missing.append(f"{run.label} (no {eval + ':' if eval else ''}{split}.{metric})")
                continue
            obs.append(observation(run, float(value), max(1, int(round(count * share)))))
        return obs, missing

    def probe_observations(self, group: str, probe: str, key: str, count_key: Any = None, *,
                           where: Mapping[str, Any] | None = None, only: Selector | None = None
                           ) -> tuple[list[dict[str, Any]], list[str]]:
        """Like ``observations`` for ``key`` (dotted) of probe ``probe``'s result."""
        from achilles.recipes.statistics import observation

        obs = []
        runs, missing, _ = self.selected(group, where, only)
        for run in runs:
            result = run.probes.get(probe)
            value = _lookup(result, key) if result else None
            if value is None:
                missing.append(f"{run.label} (no {probe} result)")
                continue
            if callable(count_key):
                n = int(count_key(result))
            else:
                n = int(_lookup(result, count_key) or 0) if count_key else None
            obs.append(observation(run, float(value), n))
        return obs, missing

    def probe_metric(self, group: str, probe: str, key: str, count_key: Any = None, *,
                     where: Mapping[str, Any] | None = None, only: Selector | None = None
                     ) -> tuple[list[float], list[int], list[str]]:
        """(values, sample counts, missing runs) of ``key`` (dotted) in probe ``probe``'s result;
        ``count_key`` (dotted, or a function of the result) gives each value's sample count."""
        obs, missing = self.probe_observations(group, probe, key, count_key, where=where, only=only)
        return [o["value"] for o in obs], [o["n"] or 0 for o in obs], missing

    def cell_means(self, group: str, metric: str, *, split: str = "test") -> tuple[dict[tuple, float], list[str]]:
        """{grid cell: mean over its finished seeds} of the final ``split.metric``; missing runs."""
        sums: dict[tuple, list[float]] = {}
        missing = []
        for run in self.group(group):
            key = tuple(sorted(run.values.items()))
            value = _lookup(run.config.get("final_metrics") or {}, f"{split}.{metric}") if run.finished else None
            if value is None:
                missing.append(f"{run.label} ({run.status})")
                continue
            sums.setdefault(key, []).append(float(value))
        return {k: sum(v) / len(v) for k, v in sums.items()}, missing

    def curves(self, run: RunRecord) -> list[dict[str, Any]]:
        """The per-epoch records (metrics.jsonl) of one run."""
        return RunFolder(run.path).read_metrics()


def read_run(group: str, values: dict, seed: int, path: Path, status: str) -> RunRecord:
    """A RunRecord with the run's record, evaluations and probe results (whatever exists)."""
    record = RunRecord(group, dict(values), seed, Path(path), status)
    folder = RunFolder(path)
    if folder.exists():
        record.config = folder.read_config()
    for file in sorted((Path(path) / EVALS_DIR).glob("*.json")):
        data = _read_json(file)
        if data is not None:
            record.evals[file.stem] = data
    for file in sorted((Path(path) / PROBES_DIR).glob("*/*.json")):
        if file.stem == file.parent.name:
            data = _read_json(file)
            if data is not None:
                record.probes[file.stem] = data
    return record
