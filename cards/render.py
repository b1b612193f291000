"""Render a model card (``README.md``) from a ``CardData``: Markdown with YAML front matter in
the form the Hugging Face Hub renders and validates.

This module formats; it reads nothing and imports nothing of achilles (``achilles.zoo.card``
gathers a run's facts into a ``CardData`` and calls ``render``). The metadata is built with
huggingface_hub's ``ModelCardData`` and ``EvalResult`` and holds ``library_name``, ``license``,
``tags`` (the architecture's own, never guessed from its name), the papers as arXiv links, and a
``model-index`` with the evaluation splits only: no train split, no loss, the headline split and
the task's declared headline metrics first, each number once (a metric that repeats another's
value at every epoch, e.g. ``acc_test`` beside ``acc``, is left out) and rounded. The body has
the sections a Hub user looks for: intended use, training data, training procedure, evaluation,
limitations, how to load and a citation block with the papers' BibTeX. A run of a task that
comes from a paper, trained with any profile other than ``paper``, says so at the top, and no
other sentence of the card claims a reproduction; a task without a paper gets no such text.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from string import Template
from typing import Any, Protocol

from huggingface_hub import EvalResult, ModelCard, ModelCardData

TEMPLATE = Path(__file__).with_name("model_card.md")
LIBRARY_NAME = "achilles"
LICENSE = "mit"
PAPER_PROFILE = "paper"
TRAIN_SPLIT = "train"
#: Decimal places of a metric in the model-index (the results table shows 4 significant digits).
METRIC_DECIMALS = 4


class CitedPaper(Protocol):
    """What a card reads of a paper: the fields of ``achilles.Paper`` (the one paper record; this
    package imports nothing of achilles, so it names the fields rather than the class). An empty
    field is one the task did not declare."""

    title: str
    arxiv: str  # an id such as ``2509.17514``
    section: str  # where the paper defines the task, e.g. "§3.3"
    bibtex: str  # the paper's BibTeX entry (empty: a minimal @misc from title and arXiv id)

    @property
    def url(self) -> str: ...  # the arXiv abstract page (empty without an arXiv id)


def paper_markdown(paper: CitedPaper) -> str:
    """The paper in a sentence: its title in italics, then its arXiv link and section."""
    link = f"[arXiv:{paper.arxiv}]({paper.url})" if paper.arxiv else ""
    where = f", {paper.section}" if paper.section else ""
    if paper.title:
        return f"*{paper.title}*" + (f" ({link}{where})" if link or where else "")
    return (link + where) or "an unnamed paper"


def paper_citation(paper: CitedPaper) -> str:
    """The BibTeX entry: the declared one, else an ``@misc`` from the title and the arXiv id."""
    if paper.bibtex:
        return paper.bibtex.strip()
    url = paper.url
    fields = [("title", f"{{{paper.title}}}" if paper.title else None),
              ("eprint", f"{{{paper.arxiv}}}" if paper.arxiv else None),
              ("archivePrefix", "{arXiv}" if paper.arxiv else None), ("url", f"{{{url}}}" if url else None)]
    key = f"arxiv{paper.arxiv}".replace(".", "_") if paper.arxiv else "paper"
    return "@misc{" + key + ",\n" + ",\n".join(f"  {k} = {v}" for k, v in fields if v) + "\n}"


@dataclass
class CardData:
    """Everything a card says, gathered from one run (see ``achilles.zoo.card``)."""

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
    papers: list[CitedPaper] = field(default_factory=list)  # achilles.Paper, the task's declared papers
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
    #: the task's declared headline metrics, most important first (headline metric, phase metrics)
    headline_metrics: list[str] = field(default_factory=list)
    #: per epoch, ``{split: {metric: value}}`` from metrics.jsonl (tells a repeated metric from a coincidence)
    metric_history: list[dict[str, Any]] = field(default_factory=list)
    #: samples each split was evaluated on (the final metrics), and the data seed they were drawn with
    eval_samples: dict[str, int] = field(default_factory=dict)
    data_seed: int | None = None
    vocab_size: int | None = None
    precision: str | None = None  # the training precision, where the run records one
    device: str | None = None
    environment: dict[str, Any] = field(default_factory=dict)  # run.json's machine and software, where recorded

    @property
    def dataset(self) -> str:
        return f"{self.task}-{self.variant}" if self.variant else self.task

    @property
    def is_paper_profile(self) -> bool:
        return self.profile == PAPER_PROFILE

    @property
    def departs_from_paper(self) -> bool:
        """A task from a paper trained with another profile (a task without a paper departs from nothing)."""
        return bool(self.papers) and not self.is_paper_profile


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


def ordered(names: list[str], first: list[str]) -> list[str]:
    """``names`` with those of ``first`` (in its order) at the front, the rest in their own order."""
    return [m for m in first if m in names] + [m for m in names if m not in first]


def repeats(split: str, values: dict[str, float], order: list[str],
            history: list[dict[str, Any]] = ()) -> dict[str, str]:
    """``{metric: the earlier metric it repeats}`` in one split: the same value at the end and at
    every epoch of ``history`` that records both (``acc_test`` beside ``acc``: one number under
    two names). Two metrics that merely meet at one value (both 1.0 at the end) differ somewhere
    in the history and stay."""
    epochs = [flat_metrics(((record or {}).get(split) or {})) for record in history]
    same: dict[str, str] = {}
    kept: list[str] = []
    for m in order:
        for k in kept:
            if values[m] == values[k] and all(e[m] == e[k] for e in epochs if m in e and k in e):
                same[m] = k
                break
        else:
            kept.append(m)
    return same


def eval_results(final_metrics: dict[str, dict[str, Any]], headline_metrics: list[str] = (),
                 history: list[dict[str, Any]] = (), headline_split: str | None = None,
                 ) -> dict[str, dict[str, float]]:
    """Per evaluation split (every split but train; the headline split first), each finite
    non-loss metric, the declared headline metrics first, each number once, rounded."""
    out: dict[str, dict[str, float]] = {}
    splits = [s for s in (final_metrics or {}) if s != TRAIN_SPLIT]
    for split in ordered(splits, [headline_split] if headline_split else []):
        values = {m: v for m, v in flat_metrics(final_metrics[split]).items() if not is_loss(m) and math.isfinite(v)}
        order = ordered(list(values), list(headline_metrics))
        same = repeats(split, values, order, history)
        kept = {m: round(values[m], METRIC_DECIMALS) for m in order if m not in same}
        if kept:
            out[str(split)] = kept
    return out


def card_repeats(card: "CardData") -> dict[str, dict[str, str]]:
    """``{split: {metric: the metric it repeats}}`` for the card's evaluation splits."""
    out = {}
    for split, metrics in (card.final_metrics or {}).items():
        values = {m: v for m, v in flat_metrics(metrics).items() if not is_loss(m) and math.isfinite(v)}
        same = repeats(split, values, ordered(list(values), card.headline_metrics), card.metric_history)
        if same:
            out[split] = same
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
def _headline_split(card: CardData) -> str | None:
    return (card.headline or {}).get("split")


def card_metadata(card: CardData) -> ModelCardData:
    """The YAML metadata as huggingface_hub's ``ModelCardData``: library, license, tags, papers and
    the model-index (one ``EvalResult`` per number)."""
    profile = card.profile or "unknown"
    tags = [LIBRARY_NAME, *card.arch_tags, card.arch, card.task, "synthetic-task", f"profile-{profile}"]
    if card.departs_from_paper:
        tags.append("not-a-paper-result")
    tags += [f"arxiv:{p.arxiv}" for p in card.papers if p.arxiv]
    results = []
    for split, values in eval_results(card.final_metrics, card.headline_metrics, card.metric_history,
                                      _headline_split(card)).items():
        for m, v in values.items():
            results.append(EvalResult(
                task_type=card.task, task_name=f"{card.task} ({profile} profile)",
                dataset_type=f"{LIBRARY_NAME}/{card.task}", dataset_name=card.dataset, dataset_config=card.variant,
                dataset_split=split, dataset_args=dict(card.task_settings) or None,
                metric_type=m, metric_value=v, metric_name=f"{split} {m}"))
    return ModelCardData(model_name=card.title if results else None, eval_results=results or None,
                         library_name=LIBRARY_NAME, license=LICENSE,
                         tags=list(dict.fromkeys(str(t) for t in tags if t)))


def front_matter(card: CardData) -> dict[str, Any]:
    """The YAML metadata as a dict (``card_metadata(card).to_dict()``)."""
    return card_metadata(card).to_dict()


def _notices(card: CardData) -> str:
    notes = []
    if card.departs_from_paper:
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
        if card.zoo_id and any(r.startswith(REPORTS_DIR + "/") for r in reports):
            line += f" `achilles zoo show {card.zoo_id}` prints where the report is on your machine."
    return line


#: the repository's reports folder, shipped in the package as ``achilles/reports/``
REPORTS_DIR = "examples/reports"


def _link(target: str) -> str:
    name = target.rsplit("/", 1)[-1]
    if "://" in target:
        return f"[{name}]({target})"
    if target.startswith(REPORTS_DIR + "/"):
        return f"`{target}` (in the achilles repository; installed with achilles as `achilles/reports/{target[len(REPORTS_DIR) + 1:]}`)"
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


def _intended_use(card: CardData) -> str:
    vocab = f"the task's {card.vocab_size} tokens" if card.vocab_size else "the task's tokens"
    return (f"Research on synthetic tasks: a small `{card.arch}` model trained on one synthetic task, `{card.dataset}`, "
            "to study how an architecture solves it or fails at it (evaluate it on other settings with "
            "`achilles eval`, look inside it with `achilles probe`, compare it with other architectures).\n\n"
            f"It is **not a language model**: it reads and predicts only {vocab}, was trained on nothing but "
            "generated samples of this task, and is not meant for text, for any downstream application or as a "
            "base for fine-tuning on real data.")


def _split_samples(card: CardData, split: str) -> str:
    n = card.eval_samples.get(split)
    return f"{n:,}" if isinstance(n, int) else "the task's default number of"


def _training_data(card: CardData) -> str:
    t = card.training
    samples = t.get("train_samples")
    train = f"{samples:,} training samples" if isinstance(samples, int) else "the task's full training set"
    seed = f"data seed {card.data_seed}" if card.data_seed is not None else "an unrecorded data seed"
    variant = f" (variant `{card.variant}`)" if card.variant else ""
    lines = [f"No external data set: every sample is generated by the `{card.task}` task of achilles{variant} "
             f"with the settings below. Training used {train}, drawn with {seed}."]
    evals = [s for s in card.final_metrics if s != TRAIN_SPLIT]
    if evals:
        lines.append("Evaluation samples, drawn with the same seed: "
                     + ", ".join(f"`{s}` {_split_samples(card, s)} samples" for s in evals)
                     + (f"; the `train` row scores the first {_split_samples(card, TRAIN_SPLIT)} training samples"
                        if TRAIN_SPLIT in card.final_metrics else "") + ".")
    settings = _table(list(card.task_settings.items()), ("task setting", "value")) if card.task_settings else \
        "The task ran with its default settings."
    seed_arg = card.data_seed if card.data_seed is not None else 0
    rebuild = (f"The same samples: `achilles.get_task(\"{card.task}\", **settings).generate(\"train\", "
               f"{samples if isinstance(samples, int) else 'None'}, seed={seed_arg})`.")
    return "\n".join(lines) + "\n\n" + settings + "\n\n" + rebuild


def environment_text(environment: dict[str, Any]) -> str:
    """run.json's ``environment`` in one line: GPU, CPU model, torch threads, torch and Python versions."""
    parts = [environment.get("gpu"), environment.get("cpu"),
             f"{environment['torch_threads']} torch thread(s)" if environment.get("torch_threads") else None,
             f"torch {environment['torch']}" if environment.get("torch") else None,
             f"Python {environment['python']}" if environment.get("python") else None]
    return ", ".join(str(p) for p in parts if p)


def _training_text(card: CardData) -> str:
    precision = f", {card.precision} precision" if card.precision else ""
    device = f" on `{card.device}`" if card.device else ""
    lines = [f"Trained with achilles {card.achilles_version}{device}, profile `{card.profile or 'unknown'}` "
             f"({budget_text(card)}{precision})"
             + (f", from {card.created}" if card.created else "")
             + (f" to {card.finished}" if card.finished else "") + "."]
    if card.environment:
        lines.append(f"Machine and software: {environment_text(card.environment)} (runs repeat exactly on one "
                     "machine; another CPU, torch version or thread count can change the numbers slightly).")
    if card.epoch_records:
        last = {k: v for k, v in card.last_epoch.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        lines.append(f"`metrics.jsonl` holds {card.epoch_records} epoch record(s); the last one: "
                     + ", ".join(f"{k} {_fmt(v)}" for k, v in last.items()) + ".")
    lines.append("Every hyper-parameter:")
    return "\n".join(lines)


def _evaluation_text(card: CardData) -> str:
    evals = [s for s in card.final_metrics if s != TRAIN_SPLIT]
    if not card.final_metrics:
        return "No final metrics were recorded for this run."
    seed = f"data seed {card.data_seed}" if card.data_seed is not None else "the run's data seed"
    after = f" after epoch {card.epochs_completed}" if card.epochs_completed is not None else ""
    where = ", ".join(f"`{s}` on {_split_samples(card, s)} samples" for s in evals) or "the train split only"
    cmd = card.zoo_id or "RUN_DIR"
    return (f"The run's final evaluation{after}: {where}, drawn with {seed}. `achilles eval {cmd}` with no flags "
            "evaluates the same samples and prints the same numbers; `--samples`, `--seed` and `--set` evaluate "
            "others.\n\n" + _results_text(card))


def _limitations(card: CardData) -> str:
    items = [f"It knows one synthetic task with the settings above: other lengths, vocabularies or placements "
             "are other tasks, about which it says nothing until evaluated on them (`achilles eval ... --set KEY=VALUE`)."]
    items.append(f"One training seed ({card.seed}): how much the results vary from seed to seed is not measured "
                 "by this checkpoint.")
    h = card.headline or {}
    n = card.eval_samples.get(str(h.get("split")))
    value = h.get("value")
    if isinstance(value, (int, float)) and 0 <= value <= 1 and isinstance(n, int) and n > 0:
        se = math.sqrt(value * (1 - value) / n)
        items.append(f"Sampling error: the headline {h.get('metric')} = {value:.4g} is measured on {n:,} "
                     f"samples, a standard error of about {se:.2g}.")
    if card.departs_from_paper:
        items.append(f"Trained with the `{card.profile or 'unknown'}` profile ({budget_text(card)}), a smaller "
                     "budget than the paper's: its numbers show the trend, not the paper's result.")
    elif not card.is_paper_profile:
        items.append(f"Trained with the `{card.profile or 'unknown'}` profile ({budget_text(card)}): a small budget.")
    if card.status != "finished":
        items.append(f"The run did not finish (status `{card.status}`): the weights are an intermediate checkpoint.")
    return "\n".join(f"- {item}" for item in items)


def _results_text(card: CardData) -> str:
    splits = {s: flat_metrics(m) for s, m in (card.final_metrics or {}).items()}
    names = list(dict.fromkeys(m for values in splits.values() for m in values))
    if not names:
        return "No final metrics were recorded for this run."
    header = "| metric | " + " | ".join(splits) + " |\n| --- |" + " --- |" * len(splits)
    rows = [f"| {m} | " + " | ".join(_fmt(round(v[m], METRIC_DECIMALS)) if m in v else "" for v in splits.values())
            + " |" for m in names]
    same = card_repeats(card)
    aliases = sorted({f"`{m}` (= `{k}`)" for split, pairs in same.items() if split != TRAIN_SPLIT
                      for m, k in pairs.items()})
    notes = []
    if TRAIN_SPLIT in splits or any(is_loss(m) for m in names):
        notes.append("The metadata above lists the evaluation splits only; this table adds the train split "
                     "and the losses.")
    if aliases:
        notes.append("The metadata lists each number once, so it leaves out " + ", ".join(aliases)
                     + ": the same number under a second name.")
    return "\n".join([header, *rows]) + ("\n\n" + " ".join(notes) if notes else "")


def _paper_text(card: CardData) -> str:
    if not card.papers:
        return "The task does not declare a paper."
    cited = "; ".join(paper_markdown(p) for p in card.papers)
    if card.is_paper_profile:
        return f"The task and the training settings (`paper` profile) follow {cited}."
    return (f"The task comes from {cited}. This checkpoint was trained with the `{card.profile or 'unknown'}` "
            "profile, so its numbers are not the paper's.")


def _citation_text(card: CardData) -> str:
    text = _paper_text(card)
    if not card.papers:
        return text
    blocks = "\n\n".join(f"```bibtex\n{paper_citation(p)}\n```" for p in card.papers)
    return f"{text} If you use this checkpoint, cite the paper{'s' if len(card.papers) > 1 else ''}:\n\n{blocks}"


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
    """The card as Markdown with YAML front matter (``ModelCardData`` metadata, parsed back by ``ModelCard``)."""
    template = Template(TEMPLATE.read_text())
    body = template.substitute(
        title=card.title,
        notices=_notices(card),
        summary=_summary(card),
        intended_use=_intended_use(card),
        model_table=_model_table(card),
        training_data=_training_data(card),
        training_text=_training_text(card),
        training_table=_table(list(card.training.items()), ("hyper-parameter", "value")),
        evaluation_text=_evaluation_text(card),
        limitations=_limitations(card),
        load_text=_load_text(card),
        figures_text=_figures_text(card.figures),
        probes_text=_probes_text(card.probes),
        files_text=_table([(f"`{name}`", why) for name, why in card.files], ("file", "what it holds")),
        citation_text=_citation_text(card),
        achilles_version=card.achilles_version,
    )
    return str(ModelCard(f"---\n{card_metadata(card).to_yaml()}\n---\n{body}"))
