"""Render a model card (``README.md``) from a ``CardData``: Markdown with YAML front matter in
the form the Hugging Face Hub renders and validates.

This module formats; it reads nothing and imports nothing of achilles (``achilles.run_card``
gathers a run's facts into a ``CardData`` and calls ``render``). The metadata holds
``library_name``, ``license``, ``tags`` (the architecture's own, never guessed from its name),
the papers as arXiv links, and a ``model-index`` with the evaluation splits only: no train
split, no loss, each metric once and rounded. A run trained with any profile other than
``paper`` says so at the top, and no other sentence of the card claims a reproduction.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from string import Template
from typing import Any

import yaml

TEMPLATE = Path(__file__).with_name("model_card.md")
LIBRARY_NAME = "achilles"
LICENSE = "mit"
PAPER_PROFILE = "paper"
TRAIN_SPLIT = "train"
#: Decimal places of a metric in the model-index (the results table shows 4 significant digits).
METRIC_DECIMALS = 4


@dataclass
class Paper:
    """A paper a task comes from; ``arxiv`` is an id such as ``2509.17514``."""

    title: str | None = None
    arxiv: str | None = None
    section: str | None = None  # where the paper defines the task, e.g. "§3.3"

    @property
    def url(self) -> str | None:
        return f"https://arxiv.org/abs/{self.arxiv}" if self.arxiv else None

    def markdown(self) -> str:
        link = f"[arXiv:{self.arxiv}]({self.url})" if self.arxiv else ""
        where = f", {self.section}" if self.section else ""
        if self.title:
            return f"*{self.title}*" + (f" ({link}{where})" if link or where else "")
        return (link + where) or "an unnamed paper"


@dataclass
class CardData:
    """Everything a card says, gathered from one run (see ``achilles.run_card``)."""

    title: str  # the zoo id, or the run's conventional name
    arch: str
    task: str
    seed: Any = None
    variant: str | None = None
    profile: str | None = None
    status: str | None = None
    epochs_completed: Any = None
    model_settings: dict[str, Any] = field(default_factory=dict)
    task_settings: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    final_metrics: dict[str, dict[str, Any]] = field(default_factory=dict)
    headline: dict[str, Any] | None = None
    arch_tags: list[str] = field(default_factory=list)
    papers: list[Paper] = field(default_factory=list)
    parameters: int | None = None
    weights_sha256: str | None = None
    files: list[tuple[str, str]] = field(default_factory=list)  # (file name, what it holds)
    figures: list[str] = field(default_factory=list)
    probes: dict[str, list[str]] = field(default_factory=dict)  # probe -> its files under probes/NAME/
    epoch_records: int = 0
    last_epoch: dict[str, Any] = field(default_factory=dict)
    achilles_version: str = "?"
    created: str | None = None
    finished: str | None = None
    repo_id: str | None = None
    zoo_id: str | None = None
    report: str | None = None  # the reproduction report this checkpoint backs (a path or URL)

    @property
    def dataset(self) -> str:
        return f"{self.task}-{self.variant}" if self.variant else self.task

    @property
    def is_paper_profile(self) -> bool:
        return self.profile == PAPER_PROFILE


# -- numbers ------------------------------------------------------------------------------
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


def is_loss(metric: str) -> bool:
    return metric.rsplit("/", 1)[-1].split("_")[0] == "loss" or metric.endswith("loss")


def eval_results(final_metrics: dict[str, dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per evaluation split (every split but train), each finite non-loss metric once, rounded."""
    out: dict[str, dict[str, float]] = {}
    for split, metrics in (final_metrics or {}).items():
        if split == TRAIN_SPLIT:
            continue
        values = {m: round(v, METRIC_DECIMALS) for m, v in flat_metrics(metrics).items()
                  if not is_loss(m) and math.isfinite(v)}
        if values:
            out[str(split)] = values
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


def budget_text(card: CardData) -> str:
    """The training budget in words: epochs, samples, batch, peak learning rate."""
    t = card.training
    parts = []
    if t.get("epochs") is not None:
        parts.append(f"{t['epochs']} epochs")
    samples = t.get("train_samples")
    parts.append(f"{samples:,} training samples" if isinstance(samples, int) else "the task's full training set")
    if t.get("batch_size") is not None:
        parts.append(f"batch {t['batch_size']}")
    if t.get("lr_peak") is not None:
        parts.append(f"peak lr {_fmt(t['lr_peak'])}")
    return ", ".join(parts)


# -- the parts of the card ----------------------------------------------------------------
def front_matter(card: CardData) -> dict[str, Any]:
    """The YAML metadata: library, license, tags, papers and the model-index."""
    profile = card.profile or "unknown"
    tags = [LIBRARY_NAME, *card.arch_tags, card.arch, card.task, "synthetic-task", f"profile-{profile}"]
    if not card.is_paper_profile:
        tags.append("not-a-paper-result")
    tags += [f"arxiv:{p.arxiv}" for p in card.papers if p.arxiv]
    meta: dict[str, Any] = {"library_name": LIBRARY_NAME, "license": LICENSE,
                            "tags": list(dict.fromkeys(str(t) for t in tags if t))}
    results = []
    for split, values in eval_results(card.final_metrics).items():
        dataset: dict[str, Any] = {"type": f"{LIBRARY_NAME}/{card.task}", "name": card.dataset, "split": split}
        if card.variant:
            dataset["config"] = card.variant
        if card.task_settings:
            dataset["args"] = dict(card.task_settings)
        results.append({
            "task": {"type": card.task, "name": f"{card.task} ({profile} profile)"},
            "dataset": dataset,
            "metrics": [{"type": m, "value": v, "name": f"{split} {m}"} for m, v in values.items()],
        })
    if results:
        meta["model-index"] = [{"name": card.title, "results": results}]
    return meta


def _notices(card: CardData) -> str:
    notes = []
    if not card.is_paper_profile:
        what = f"the `{card.profile}` training profile" if card.profile else "no recorded training profile"
        notes.append(f"> **Not the paper's result.** This model was trained with {what} ({budget_text(card)}), "
                     "not the paper's settings (`paper` profile). Its numbers check the pipeline and show "
                     "the trend at a small budget; do not cite them as the paper's.")
    if card.status != "finished":
        notes.append(f"> **Unfinished run.** Status `{card.status}` after {card.epochs_completed or '?'} "
                     f"epoch(s): the weights are an intermediate checkpoint.")
    return "\n\n".join(notes) + ("\n" if notes else "")


def _summary(card: CardData) -> str:
    headline = card.headline or {}
    line = f"A `{card.arch}` model trained on the `{card.dataset}` task (seed {card.seed})."
    if headline.get("metric") is not None and isinstance(headline.get("value"), (int, float)):
        line += (f" Headline: **{headline['metric']} = {headline['value']:.4g}** on the "
                 f"`{headline.get('split')}` split.")
    if card.report:  # one report, or several (comma-separated) when recipes share the run
        reports = [r.strip() for r in card.report.split(", ") if r.strip()]
        line += (f" This checkpoint backs the report{'s' if len(reports) > 1 else ''} "
                 + ", ".join(_link(r) for r in reports) + ".")
    return line


def _link(target: str) -> str:
    name = target.rsplit("/", 1)[-1]
    if "://" in target:
        return f"[{name}]({target})"
    return f"`{target}`" if target.startswith("/") else f"`{target}` (in the achilles repository)"


def _model_table(card: CardData) -> str:
    model = card.model_settings
    rows: list[tuple[Any, Any]] = [("Architecture", f"`{card.arch}`"),
                                   ("Parameters", _human_count(card.parameters))]
    if card.arch_tags:
        rows.append(("Family", ", ".join(card.arch_tags)))
    for key, label in (("n_layers", "Layers"), ("d_model", "Width (d_model)"),
                       ("gamma", "Init rate gamma (weight std = d_in^-gamma)")):
        if key in model:
            rows.append((label, model[key]))
    rows += [("Task", f"`{card.task}`"), ("Task variant", card.variant or "(default)"), ("Seed", card.seed),
             ("Training profile", card.profile or "unknown"), ("Budget", budget_text(card)),
             ("Status", f"{card.status} after {card.epochs_completed if card.epochs_completed is not None else '?'}"
                        " epoch(s)")]
    settings = {"arch": card.arch, "model": model, "task": card.task, "task_config": card.task_settings}
    return (_table(rows, ("setting", "value")) + "\n\n<details><summary>Every model and task setting "
            "(rebuilds it with <code>achilles.create_model</code> / <code>achilles.get_task</code>)"
            "</summary>\n\n```json\n" + json.dumps(settings, indent=2) + "\n```\n\n</details>")


def _training_text(card: CardData) -> str:
    lines = [f"Trained with achilles {card.achilles_version}, profile `{card.profile or 'unknown'}` "
             f"({budget_text(card)})"
             + (f", from {card.created}" if card.created else "")
             + (f" to {card.finished}" if card.finished else "") + "."]
    if card.epoch_records:
        last = {k: v for k, v in card.last_epoch.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        lines.append(f"`metrics.jsonl` holds {card.epoch_records} epoch record(s); the last one: "
                     + ", ".join(f"{k} {_fmt(v)}" for k, v in last.items()) + ".")
    lines.append("Every hyper-parameter:")
    return "\n".join(lines)


def _results_text(card: CardData) -> str:
    splits = {s: flat_metrics(m) for s, m in (card.final_metrics or {}).items()}
    names = list(dict.fromkeys(m for values in splits.values() for m in values))
    if not names:
        return "No final metrics were recorded for this run."
    header = "| metric | " + " | ".join(splits) + " |\n| --- |" + " --- |" * len(splits)
    rows = [f"| {m} | " + " | ".join(_fmt(round(v[m], METRIC_DECIMALS)) if m in v else "" for v in splits.values())
            + " |" for m in names]
    note = ("The metadata above lists the evaluation splits only; this table adds the train split "
            "and the losses.") if TRAIN_SPLIT in splits or any(is_loss(m) for m in names) else ""
    return "\n".join([header, *rows]) + (f"\n\n{note}" if note else "")


def _paper_text(card: CardData) -> str:
    if not card.papers:
        return "The task does not declare a paper."
    cited = "; ".join(p.markdown() for p in card.papers)
    if card.is_paper_profile:
        return f"The task and the training settings (`paper` profile) follow {cited}."
    return (f"The task comes from {cited}. This checkpoint was trained with the `{card.profile or 'unknown'}` "
            "profile, so its numbers are not the paper's.")


def _load_text(card: CardData) -> str:
    ids = []
    if card.zoo_id:
        ids.append((card.zoo_id, "zoo id: the index pins the weights' sha256 (and the Hub commit once published)"))
    if card.repo_id:
        ids.append((f"hf-hub:{card.repo_id}", "from the Hub (add @REVISION to pin one)"))
    ids.append(("path/to/run", "a local run folder"))
    calls = "\n".join(f'run = achilles.load("{i}")  # {why}' for i, why in ids)
    hf = ""
    if card.repo_id:
        hf = ("\n\nOr the Hugging Face way (the model alone; `config.json` holds its settings at the top level):"
              f"\n\n```python\nfrom achilles import HookedModel\n\nmodel = HookedModel.from_pretrained(\"{card.repo_id}\")"
              "\n```")
    cli = (f"On the command line, `achilles pull {ids[0][0]}` fetches it (from the Hub into the Hugging Face "
           "cache, or from the copy bundled with achilles) and verifies it." if len(ids) > 1 else
           "Publish it with `achilles push RUN_DIR --repo-id ORG/NAME`; it then loads from `hf-hub:ORG/NAME`.")
    return ("```python\nimport achilles\n\n" + calls + "\nbatch = run.task.generate(\"test\", n=8)\n"
            "logits = run.model(batch.tokens)\nprint(run.task.metrics(logits, batch))\n```" + hf + "\n\n"
            f"{cli} Weights are safetensors only and are checked against the sha256 recorded in "
            "`run.json` before loading.")


def _figures_text(figures: list[str]) -> str:
    if not figures:
        return "No figures were saved with this run."
    return "\n\n".join(f"![{Path(f).stem}]({f})" for f in figures)


def _probes_text(probes: dict[str, list[str]]) -> str:
    if not probes:
        return "No probe was run on this checkpoint yet (`achilles probe RUN --probe NAME` adds one)."
    lines = []
    for name, files in probes.items():
        listed = ", ".join(f"[`{f}`](probes/{name}/{f})" for f in files) or "(empty)"
        lines.append(f"- **{name}**: {listed}")
    return "Outputs of `achilles probe`, under `probes/`:\n\n" + "\n".join(lines)


def render(card: CardData) -> str:
    """The card as Markdown with YAML front matter."""
    template = Template(TEMPLATE.read_text())
    return template.substitute(
        front_matter=yaml.safe_dump(front_matter(card), sort_keys=False, allow_unicode=True).rstrip("\n"),
        title=card.title,
        notices=_notices(card),
        summary=_summary(card),
        model_table=_model_table(card),
        training_text=_training_text(card),
        training_table=_table(list(card.training.items()), ("hyper-parameter", "value")),
        results_text=_results_text(card),
        paper_text=_paper_text(card),
        load_text=_load_text(card),
        figures_text=_figures_text(card.figures),
        probes_text=_probes_text(card.probes),
        files_text=_table([(f"`{name}`", why) for name, why in card.files], ("file", "what it holds")),
        achilles_version=card.achilles_version,
    )
