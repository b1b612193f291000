"""The model card of a run folder: gather its facts into ``achilles.cards.CardData`` and render.

The dependency runs one way: core gathers (run record, metrics, files, what the task and the
architecture declare), ``achilles.cards`` formats and imports nothing of achilles.
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path
from typing import Any

from achilles.cards import CardData, render

from achilles.contract.declarations import arch_tags, task_papers, task_variant
from achilles.contract.task import Paper
from achilles.runs.folder import recorded_data_seed
from achilles.runs.layout import (CARD, CONFIG, INIT_WEIGHTS, MANIFEST, METRICS, PROBES_DIR, RECORD, RUN_FORMAT_V1,
                                  WEIGHTS)
from achilles.runs.folder import RunFolder
from achilles.runs.files import atomic_write_text
from achilles.runs.ownership import claim, owned_names


def count_parameters(weights: Path) -> int | None:
    """Number of parameters in a safetensors file, read from its header alone (no tensors loaded)."""
    try:
        with open(weights, "rb") as f:
            (size,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(size))
    except (OSError, struct.error, ValueError):
        return None
    return sum(math.prod(v["shape"]) for k, v in header.items() if k != "__metadata__")


def probe_outputs(run_dir: Path) -> dict[str, list[str]]:
    """``{probe: [its files]}`` under ``RUN/probes/``."""
    root = run_dir / PROBES_DIR
    if not root.is_dir():
        return {}
    return {d.name: sorted(f.name for f in d.iterdir() if f.is_file() and not f.name.startswith("."))
            for d in sorted(root.iterdir()) if d.is_dir()}


def _files(run: RunFolder, config: dict[str, Any]) -> list[tuple[str, str]]:
    v1 = run.layout() == RUN_FORMAT_V1
    described = [(CONFIG, "everything to rebuild model and task, status and results" if v1 else
                  "the model: its architecture and settings at the top level"),
                 (RECORD, "the run record: task, training settings, status, metrics, the weights' sha256"),
                 (WEIGHTS, f"final weights (sha256 `{config.get('weights_sha256') or 'not recorded'}`)"),
                 (INIT_WEIGHTS, "weights at initialisation"), (METRICS, "one record per epoch")]
    return [(name, why) for name, why in described if (run.path / name).is_file()]


def _task_facts(task: str, task_config: dict[str, Any]) -> tuple[Any, list[str]]:
    """The task built from the run's settings (None where it cannot be: a plugin not installed) and
    its declared headline metrics, most important first."""
    from achilles.contract.declarations import task_class

    cls = task_class(task)
    declared = [getattr(cls, "headline_metric", None), *(getattr(cls, "phase_metrics", None) or ())]
    headline = [str(m).split(".", 1)[-1] for m in declared if m]
    try:
        from achilles.contract.lookup import get_task

        return get_task(task, **task_config), list(dict.fromkeys(headline))
    except Exception:  # noqa: BLE001 - a card never fails for a task it cannot rebuild
        return None, list(dict.fromkeys(headline))


def _vocab_size(task: Any) -> int | None:
    try:
        return int(task.vocab_size) if task is not None else None
    except Exception:  # noqa: BLE001
        return None


def evaluation_sizes(config: dict[str, Any], task: Any = None) -> dict[str, int]:
    """``{split: samples}`` the run's final evaluation scored (``training_data``: each evaluation
    split ``eval_samples`` or the task's size; the train row the first ``eval_samples`` training
    samples, or up to 10,000)."""
    training = config.get("training") or {}
    n = training.get("eval_samples")
    sizes: dict[str, int] = {}
    try:
        defaults = dict(task.split_sizes()) if task is not None else {}
    except Exception:  # noqa: BLE001
        defaults = {}
    for split in (config.get("final_metrics") or {}):
        if split == "train":
            train = training.get("train_samples") or defaults.get("train")
            value = n if isinstance(n, int) else (min(train, 10_000) if isinstance(train, int) else None)
            if isinstance(value, int) and isinstance(train, int):
                value = min(value, train)
        else:
            value = n if isinstance(n, int) else defaults.get(split)
        if isinstance(value, int):
            sizes[split] = value
    return sizes


def card_data(run_dir: str | Path, repo_id: str | None = None, zoo_id: str | None = None,
              report: str | None = None) -> CardData:
    """What the card of ``run_dir`` says; ``repo_id``/``zoo_id`` add how to load the published copy."""
    from achilles.zoo.index import suggest_zoo_id

    run = RunFolder(run_dir)
    config = run.read_config()
    try:
        records = run.read_metrics()
    except (json.JSONDecodeError, OSError):
        records = []  # a damaged log must not stop the card; the table just goes without it
    task, arch = str(config.get("task")), str(config.get("arch"))
    built, headline_metrics = _task_facts(task, dict(config.get("task_config") or {}))
    training = config.get("training") or {}
    data_seed = recorded_data_seed(config) if training else None
    return CardData(
        title=zoo_id or suggest_zoo_id(config), arch=arch, task=task, seed=config.get("seed"),
        variant=task_variant(task, config.get("task_config")),
        profile=(config.get("training") or {}).get("profile"), status=config.get("status"),
        epochs_completed=config.get("epochs_completed"), model_settings=dict(config.get("model") or {}),
        task_settings=dict(config.get("task_config") or {}), training=dict(config.get("training") or {}),
        final_metrics=dict(config.get("final_metrics") or {}), headline=config.get("headline"),
        arch_tags=arch_tags(arch), papers=[Paper(**{k: v or "" for k, v in p.items()}) for p in task_papers(task)],
        parameters=count_parameters(run.path / WEIGHTS), weights_sha256=config.get("weights_sha256"),
        files=_files(run, config),
        figures=sorted(p.name for p in run.path.glob("*.png") if p.name in owned_names(run.path)),
        probes=probe_outputs(run.path), epoch_records=len(records), last_epoch=records[-1] if records else {},
        achilles_version=str(config.get("achilles_version", "?")), created=config.get("created"),
        finished=config.get("finished"), repo_id=repo_id, zoo_id=zoo_id,
        report=report or ", ".join(config.get("reports") or []) or None,
        headline_metrics=headline_metrics,
        metric_history=[r.get("metrics") or {} for r in records if isinstance(r, dict)],
        eval_samples=evaluation_sizes(config, built), data_seed=data_seed,
        vocab_size=(config.get("model") or {}).get("vocab_size") or _vocab_size(built),
        precision=training.get("precision") or config.get("precision"), device=config.get("device"),
        environment=dict(config.get("environment") or {}))


def render_card(run_dir: str | Path, repo_id: str | None = None, zoo_id: str | None = None,
                report: str | None = None) -> str:
    """The model card of the run in ``run_dir`` as Markdown with YAML front matter."""
    return render(card_data(run_dir, repo_id=repo_id, zoo_id=zoo_id, report=report))


def write_card(run_dir: str | Path, repo_id: str | None = None, zoo_id: str | None = None,
               report: str | None = None) -> Path:
    """Render the card and write it atomically to ``run_dir/README.md``; return its path."""
    path = Path(run_dir) / CARD
    if (Path(run_dir) / MANIFEST).is_file():  # a run folder that lists what it writes (not a bundle)
        claim(run_dir, CARD)
    atomic_write_text(path, render_card(run_dir, repo_id=repo_id, zoo_id=zoo_id, report=report))
    return path
