"""Render a run folder's model card (``README.md``) from its ``config.json``, ``metrics.jsonl``
and figures.

The card is Markdown with YAML front matter that ``huggingface_hub.ModelCard`` parses:
``library_name``, ``tags`` and a ``model-index`` holding one result per evaluated split.
A run trained with any profile other than ``paper`` says so at the top of the card, so a
smoke-test result is never mistaken for a reproduction of the paper.
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path
from string import Template
from typing import Any

import yaml

from achilles.runs import CARD, CONFIG, INIT_WEIGHTS, METRICS, WEIGHTS, RunFolder, atomic_write_text

TEMPLATE = Path(__file__).with_name("model_card.md")
LIBRARY_NAME = "achilles"
PAPER_PROFILE = "paper"

#: First-party tasks -> the paper whose experiment they reproduce (matched by name prefix).
PAPERS: dict[str, dict[str, str]] = {
    "composite": {"title": "Achilles' Heel of Mamba: Essential difficulties of the Mamba architecture "
                           "demonstrated by synthetic data", "arxiv": "2509.17514"},
    "inverse": {"title": "Achilles' Heel of Mamba: Essential difficulties of the Mamba architecture "
                         "demonstrated by synthetic data", "arxiv": "2509.17514"},
    "mqar": {"title": "Revealing and Mitigating the Local Pattern Shortcuts of Mamba", "arxiv": "2410.15678"},
    "copy": {"title": "Exploring the Limitations of Mamba in COPY and CoT Reasoning", "arxiv": "2410.03810"},
    "cot-": {"title": "Exploring the Limitations of Mamba in COPY and CoT Reasoning", "arxiv": "2410.03810"},
}


# -- reading the run ---------------------------------------------------------------------
#: Task settings that name a variant of the task (mqar: where pairs sit, their n-gram shape).
VARIANT_SETTINGS = ("variant", "placements", "ngrams")


def task_variant(config: dict[str, Any]) -> str | None:
    """The task's variant (e.g. ``last-K1V1`` for mqar), from the settings that name one."""
    task_config = config.get("task_config") or {}
    parts = []
    for key in VARIANT_SETTINGS:
        value = task_config.get(key)
        if value in (None, "", [], ()):
            continue
        parts.append("+".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value))
    return "-".join(parts) or None


def dataset_name(config: dict[str, Any]) -> str:
    """Task name plus variant: what the model-index calls the dataset."""
    variant = task_variant(config)
    return f"{config['task']}-{variant}" if variant else str(config["task"])


def paper_for(config: dict[str, Any]) -> dict[str, str] | None:
    """The paper a run reproduces: ``config['paper']`` if the trainer recorded one, else by task."""
    if isinstance(config.get("paper"), dict):
        return config["paper"]
    task = str(config.get("task", ""))
    for prefix, paper in PAPERS.items():
        if task.startswith(prefix):
            return paper
    return None


def count_parameters(weights: Path) -> int | None:
    """Number of parameters in a safetensors file, read from its header alone (no tensors loaded)."""
    try:
        with open(weights, "rb") as f:
            (size,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(size))
    except (OSError, struct.error, ValueError):
        return None
    return sum(math.prod(v["shape"]) for k, v in header.items() if k != "__metadata__")


def flat_metrics(metrics: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """``{metric: value}`` with nested dicts flattened to ``a/b`` and non-numbers dropped."""
    out: dict[str, float] = {}
    for key, value in (metrics or {}).items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flat_metrics(value, f"{name}/"))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[name] = float(value)
    return out


def _fmt(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (dict, list)):
        return "`" + json.dumps(value) + "`"
    return str(value)


def _table(rows: list[tuple[Any, Any]], headers: tuple[str, str] = ("", "")) -> str:
    lines = [f"| {headers[0]} | {headers[1]} |", "| --- | --- |"]
    lines += [f"| {k} | {_fmt(v).replace('|', '/')} |" for k, v in rows]
    return "\n".join(lines)


def _human_count(n: int | None) -> str:
    if n is None:
        return "unknown"
    return f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n / 1e3:.1f}k" if n >= 1e3 else str(n)


# -- the parts of the card ----------------------------------------------------------------
def front_matter(config: dict[str, Any], model_name: str) -> dict[str, Any]:
    """The YAML metadata: library, tags, and the model-index with one result per split."""
    profile = (config.get("training") or {}).get("profile") or "unknown"
    tags = [LIBRARY_NAME, "state-space-model", "synthetic-task", str(config.get("arch")),
            str(config.get("task")), f"profile-{profile}"]
    if profile != PAPER_PROFILE:
        tags.append("not-a-paper-result")
    results = []
    for split, metrics in (config.get("final_metrics") or {}).items():
        # NaN/inf (a diverged run) stay in the table but not in the metadata the Hub validates.
        values = {m: v for m, v in flat_metrics(metrics).items() if math.isfinite(v)}
        if not values:
            continue
        dataset: dict[str, Any] = {"type": f"{LIBRARY_NAME}/{config['task']}", "name": dataset_name(config),
                                   "split": str(split)}
        if task_variant(config):
            dataset["config"] = task_variant(config)
        if config.get("task_config"):
            dataset["args"] = dict(config["task_config"])
        results.append({
            "task": {"type": str(config["task"]), "name": f"{config['task']} ({profile} profile)"},
            "dataset": dataset,
            "metrics": [{"type": m, "value": v, "name": f"{split} {m}"} for m, v in values.items()],
        })
    meta: dict[str, Any] = {"library_name": LIBRARY_NAME, "tags": list(dict.fromkeys(tags)), "license": "mit"}
    if results:
        meta["model-index"] = [{"name": model_name, "results": results}]
    return meta


def _notices(config: dict[str, Any]) -> str:
    training = config.get("training") or {}
    profile = training.get("profile")
    paper = paper_for(config)
    notes = []
    if profile != PAPER_PROFILE:
        what = f"the `{profile}` training profile" if profile else "no recorded training profile"
        cited = f" of *{paper['title']}*" if paper else ""
        notes.append(f"> **Not the paper's result.** This model was trained with {what}, not the paper's "
                     f"settings (`paper` profile). Its numbers check the pipeline; do not cite them as a "
                     f"reproduction{cited}.")
    status = config.get("status")
    if status != "finished":
        notes.append(f"> **Unfinished run.** Status `{status}` after {config.get('epochs_completed', '?')} "
                     f"epoch(s): the weights are an intermediate checkpoint.")
    return "\n\n".join(notes) + ("\n" if notes else "")


def _summary(config: dict[str, Any]) -> str:
    headline = config.get("headline") or {}
    line = (f"A `{config.get('arch')}` model trained on the `{dataset_name(config)}` task "
            f"(seed {config.get('seed')}).")
    if headline.get("metric") is not None and isinstance(headline.get("value"), (int, float)):
        line += (f" Headline: **{headline['metric']} = {headline['value']:.4g}** on the "
                 f"`{headline.get('split')}` split.")
    return line


def _model_table(config: dict[str, Any], run_dir: Path) -> str:
    model = config.get("model") or {}
    rows: list[tuple[Any, Any]] = [("Architecture", f"`{config.get('arch')}`"),
                                   ("Parameters", _human_count(count_parameters(run_dir / WEIGHTS)))]
    for key, label in (("n_layers", "Layers"), ("d_model", "Width (d_model)"),
                       ("gamma", "Init rate gamma (weight std = d_in^-gamma)")):
        if key in model:
            rows.append((label, model[key]))
    rows += [("Task", f"`{config.get('task')}`"), ("Task variant", task_variant(config) or "(default)"),
             ("Seed", config.get("seed")),
             ("Training profile", (config.get("training") or {}).get("profile", "unknown")),
             ("Status", f"{config.get('status')} after {config.get('epochs_completed', '?')} epoch(s)")]
    settings = {"arch": config.get("arch"), "model": model, "task": config.get("task"),
                "task_config": config.get("task_config") or {}}
    return (_table(rows, ("setting", "value")) + "\n\n<details><summary>Every model and task setting "
            "(rebuilds it with <code>achilles.create_model</code> / <code>achilles.get_task</code>)"
            "</summary>\n\n```json\n" + json.dumps(settings, indent=2) + "\n```\n\n</details>")


def _training_text(config: dict[str, Any], records: list[dict[str, Any]]) -> str:
    lines = [f"Trained with achilles {config.get('achilles_version', '?')}, profile "
             f"`{(config.get('training') or {}).get('profile', 'unknown')}`"
             + (f", from {config['created']}" if config.get("created") else "")
             + (f" to {config['finished']}" if config.get("finished") else "") + "."]
    if records:
        last = {k: v for k, v in records[-1].items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        lines.append(f"`{METRICS}` holds {len(records)} epoch record(s); the last one: "
                     + ", ".join(f"{k} {_fmt(v)}" for k, v in last.items()) + ".")
    lines.append("Every hyper-parameter:")
    return "\n".join(lines)


def _results_text(config: dict[str, Any]) -> str:
    final = config.get("final_metrics") or {}
    splits = {s: flat_metrics(m) for s, m in final.items()}
    names = list(dict.fromkeys(m for values in splits.values() for m in values))
    if not names:
        return "No final metrics were recorded for this run."
    header = "| metric | " + " | ".join(splits) + " |\n| --- |" + " --- |" * len(splits)
    rows = [f"| {m} | " + " | ".join(_fmt(v[m]) if m in v else "" for v in splits.values()) + " |"
            for m in names]
    return "\n".join([header, *rows])


def _paper_text(config: dict[str, Any]) -> str:
    paper = paper_for(config)
    if not paper:
        return "This task is not tied to a paper that achilles knows of."
    link = f" ([arXiv:{paper['arxiv']}](https://arxiv.org/abs/{paper['arxiv']}))" if paper.get("arxiv") else ""
    return f"Reproduces an experiment of *{paper['title']}*{link}."


def _load_text(repo_id: str | None, zoo_id: str | None) -> str:
    ids = []
    if zoo_id:
        ids.append((zoo_id, "zoo id: the index pins the commit and the weights' sha256"))
    if repo_id:
        ids.append((f"hf-hub:{repo_id}", "from the Hub (add @REVISION to pin one)"))
    ids.append(("path/to/run", "a local run folder"))
    calls = "\n".join(f'run = achilles.load("{i}")  # {why}' for i, why in ids)
    cli = (f"On the command line, `achilles pull {ids[0][0]}` fetches it into the Hugging Face cache "
           "(it then loads offline)." if len(ids) > 1 else
           "Publish it with `achilles push RUN_DIR --repo-id ORG/NAME`; it then loads from `hf-hub:ORG/NAME`.")
    return ("```python\nimport achilles\n\n" + calls + "\nbatch = run.task.generate(\"test\", n=8)\n"
            "logits = run.model(batch.tokens)\nprint(run.task.metrics(logits, batch))\n```\n\n"
            f"{cli} Weights are safetensors only and are checked against the sha256 recorded in "
            "`config.json` before loading.")


def _figures_text(figures: list[str]) -> str:
    if not figures:
        return "No figures were saved with this run."
    return "\n\n".join(f"![{Path(f).stem}]({f})" for f in figures)


def _files_text(run_dir: Path, config: dict[str, Any]) -> str:
    described = [(CONFIG, "everything needed to rebuild model and task, status and results"),
                 (WEIGHTS, f"final weights (sha256 `{config.get('weights_sha256') or 'not recorded'}`)"),
                 (INIT_WEIGHTS, "weights at initialisation"), (METRICS, "one record per epoch")]
    rows = [(f"`{name}`", why) for name, why in described if (run_dir / name).is_file()]
    return _table(rows, ("file", "what it holds"))


# -- public -----------------------------------------------------------------------------
def render_card(run_dir: str | Path, repo_id: str | None = None, zoo_id: str | None = None) -> str:
    """The model card of the run in ``run_dir`` as Markdown with YAML front matter.

    ``repo_id`` (``ORG/NAME``) and ``zoo_id`` add how to load the published copy."""
    run_dir = Path(run_dir)
    run = RunFolder(run_dir)
    config = run.read_config()
    try:
        records = run.read_metrics()
    except (json.JSONDecodeError, OSError):
        records = []  # a damaged log must not stop the card; the table just goes without it
    figures = sorted(p.name for p in run_dir.glob("*.png"))
    from achilles.zoo import suggest_zoo_id

    model_name = zoo_id or suggest_zoo_id(config)
    meta = front_matter(config, model_name)
    training = config.get("training") or {}
    return Template(TEMPLATE.read_text()).substitute(
        front_matter=yaml.safe_dump(meta, sort_keys=False, allow_unicode=True).rstrip("\n"),
        title=model_name,
        notices=_notices(config),
        summary=_summary(config),
        model_table=_model_table(config, run_dir),
        training_text=_training_text(config, records),
        training_table=_table(list(training.items()), ("hyper-parameter", "value")),
        results_text=_results_text(config),
        paper_text=_paper_text(config),
        load_text=_load_text(repo_id, zoo_id),
        figures_text=_figures_text(figures),
        files_text=_files_text(run_dir, config),
        achilles_version=config.get("achilles_version", "?"),
    )


def write_card(run_dir: str | Path, repo_id: str | None = None, zoo_id: str | None = None) -> Path:
    """Render the card and write it atomically to ``run_dir/README.md``; return its path."""
    path = Path(run_dir) / CARD
    atomic_write_text(path, render_card(run_dir, repo_id=repo_id, zoo_id=zoo_id))
    return path
