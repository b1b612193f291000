"""The report of a reproduction (report.md and report.json), and the summary page over many."""

from __future__ import annotations

import json
import os
import platform
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..errors import AchillesError
from ..runs import atomic_write_json, atomic_write_text
from .registry import natural_key
from .results import RecipeResults
from .spec import Plan, RunGroup

REPORT_MD = "report.md"
REPORT_JSON = "report.json"
NOTES_MD = "NOTES.md"  # optional, hand-written: linked from the summary page
SUMMARY_TITLE = "# What achilles reproduces"
SUMMARY_FIELDS = {"statement", "paper", "where", "paper_value", "measured", "verdict"}
REPORT_FORMAT = "achilles-report/1"
VERDICT_MARK = {"held": "✅ held", "not held": "❌ not held", "inconclusive": "⚠️ inconclusive"}


def machine() -> str:
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cores = os.cpu_count() or 0
    text = f"{platform.machine()}, {cores} CPU core(s)"
    try:
        import torch

        if torch.cuda.is_available():
            text += f", {torch.cuda.get_device_name(0)}"
    except Exception:  # pragma: no cover
        pass
    return text


def _md(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(_md(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def group_budget(group: RunGroup, plan: Plan) -> dict[str, Any]:
    """What one run of ``group`` trains on: the settings the trainer will use."""
    from ..api import registry
    from ..profiles import settings_for

    task_cls = registry("task").get(group.task).factory
    s = settings_for(plan.training_profile, getattr(task_cls, "training_defaults", {}), **dict(group.train))
    model = {**getattr(task_cls, "model_defaults", {}), **dict(group.model)}
    samples = s.train_samples
    if samples is None:
        try:
            from ..api import get_task

            samples = get_task(group.task, **dict(group.task_settings)).split_sizes()["train"]
        except Exception:  # a task that needs model settings to size itself
            samples = None
    grid = ", ".join(f"{k} ∈ {{{', '.join(str(v) for v in vals)}}}" for k, vals in group.grid.items())
    return {"group": group.name, "arch": group.arch, "task": group.task,
            "task_settings": dict(group.task_settings), "model": model, "grid": grid,
            "seeds": group.seeds, "runs": group.runs, "train_samples": samples, "epochs": s.epochs,
            "batch_size": s.batch_size, "lr": f"{s.lr_start:g} → {s.lr_peak:g} → {s.lr_start:g}",
            "warmup_epochs": s.warmup_epochs, "eval_samples": s.eval_samples,
            "profile": plan.training_profile}


def _settings_text(d: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in d.items()) or "defaults"


def write_report(results: RecipeResults, claims: list[dict[str, Any]], figures: list[dict[str, str]],
                 out: Path, seconds: float = 0.0) -> Path:
    """Write report.md and report.json into ``out``; return the path of report.md."""
    from .. import __version__

    recipe, plan = results.recipe, results.plan
    out = Path(out)
    missing = [f"{r.label}: {r.status} ({os.path.relpath(r.path, out)})" for r in results.missing]
    budgets = [group_budget(g, plan) for g in plan.runs]
    runs = [{"group": r.group, "values": r.values, "seed": r.seed, "status": r.status,
             "epochs": r.config.get("epochs_completed"), "path": os.path.relpath(r.path, out),
             "headline": r.config.get("headline"), "weights_sha256": r.config.get("weights_sha256")}
            for r in results.runs]
    counts = {v: sum(c["verdict"] == v for c in claims) for v in ("held", "not held", "inconclusive")}
    data = {"format": REPORT_FORMAT, "recipe": recipe.name, "title": recipe.title,
            "paper": {"label": recipe.paper.label, "title": recipe.paper.title, "arxiv": recipe.paper.arxiv},
            "source": recipe.source, "profile": results.profile, "summary": recipe.summary,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "achilles_version": __version__, "machine": machine(), "seconds": round(seconds, 1),
            "complete": not missing, "missing": missing, "verdicts": counts, "claims": claims,
            "figures": figures, "budget": budgets, "paper_budget": dict(recipe.paper_budget),
            "departures": plan.departures, "runs": runs}
    atomic_write_json(out / REPORT_JSON, data)
    atomic_write_text(out / REPORT_MD, render_markdown(data))
    return out / REPORT_MD


def render_markdown(data: dict[str, Any]) -> str:
    paper = data["paper"]
    lines = [f"# {data['recipe']}: {data['title']}", "",
             f"*{paper['title']}* ([arXiv:{paper['arxiv']}](https://arxiv.org/abs/{paper['arxiv']})), "
             f"{data['source']}. Profile **{data['profile']}**; achilles {data['achilles_version']}; "
             f"{data['machine']}; written {data['created']}.", "", data["summary"], ""]
    if data["profile"] != "paper":
        lines += ["> This is the **quick** profile: a budget designed to show the finding on a CPU in "
                  "minutes per run, not the paper's training. How it departs from the paper is listed "
                  "below; only the `paper` profile follows the paper's settings.", ""]
    if data["missing"]:
        lines += [f"> **Incomplete:** {len(data['missing'])} run(s) are not finished; claims that need them "
                  "are inconclusive. Re-run the same command to resume.", ""]
        lines += [f"> - {m}" for m in data["missing"]] + [""]
    v = data["verdicts"]
    lines += ["## Claims", "",
              f"{v['held']} held, {v['not held']} not held, {v['inconclusive']} inconclusive. Each verdict "
              "is computed from the runs below by the rule shown: *held* when the whole 95% interval "
              "satisfies the rule, *not held* when the whole interval misses it, *inconclusive* when it "
              "straddles the threshold or runs are missing.", ""]
    rows = [[c["statement"], f"{c['paper']} {c['where']}" + (f": {c['paper_value']}" if c["paper_value"] else ""),
             c["measured"], c["rule"], VERDICT_MARK.get(c["verdict"], c["verdict"])] for c in data["claims"]]
    lines += [_table(["claim", "paper", "measured [95% interval]", "rule", "verdict"], rows), ""]
    lines += ["How each number was measured:", ""]
    for c in data["claims"]:
        lines.append(f"- **{c['id']}**: {c['measured_as']}. {c['measurement']['method']}. Verdict: {c['why']}.")
        for pre in c.get("preconditions", []):
            lines.append(f"  - precondition: {pre['text']}: measured {pre['measured']} ({pre['verdict']}).")
    lines.append("")
    if data["figures"]:
        lines += ["## Figures", ""]
        for f in data["figures"]:
            if f.get("path"):
                lines += [f"![{f['caption']}]({f['path']})", "", f"*{f['caption']}*", ""]
            else:
                lines += [f"*{f['name']}: could not be drawn ({f.get('error')})*", ""]
    lines += ["## Budget: this run vs the paper", ""]
    rows = [[b["group"], b["arch"], b["task"] + (f" ({_settings_text(b['task_settings'])})" if b["task_settings"] else ""),
             _settings_text({k: b["model"][k] for k in sorted(b["model"])}) + (f"; grid {b['grid']}" if b["grid"] else ""),
             b["seeds"], b["runs"], b["train_samples"], b["epochs"], b["batch_size"], b["lr"]] for b in data["budget"]]
    lines += [_table(["group", "arch", "task", "model", "seeds", "runs", "train samples", "epochs", "batch", "lr"], rows), ""]
    if data["paper_budget"]:
        lines += ["The paper: " + "; ".join(f"{k} {v}" for k, v in data["paper_budget"].items()) + ".", ""]
    if data["departures"]:
        lines += ["## How this profile departs from the paper", "", data["departures"], ""]
    lines += ["## Runs", ""]
    rows = [[r["group"], ", ".join(f"{k}={v}" for k, v in r["values"].items()) or "-", r["seed"], r["status"],
             r["epochs"], _headline_of(r), f"`{r['path']}`"] for r in data["runs"]]
    lines += [_table(["group", "cell", "seed", "status", "epochs", "headline", "run folder"], rows), "",
              f"Wall time of this invocation: {data['seconds']:.0f} s (runs reused from earlier invocations "
              "are not counted).", ""]
    return "\n".join(lines)


def _headline_of(run: dict[str, Any]) -> str:
    head = run.get("headline") or {}
    value = head.get("value")
    return f"{head.get('split')} {head.get('metric')} {value:.3f}" if isinstance(value, (int, float)) else "-"


def _read_report(file: Path) -> dict:
    """A report.json with what the summary reads (its recipe, profile and claims), or a one-line error."""
    try:
        data = json.loads(file.read_text())
        if isinstance(data, dict) and isinstance(data.get("recipe"), str) and isinstance(data.get("profile"), str) \
                and isinstance(data.get("claims"), list) \
                and all(isinstance(c, dict) and SUMMARY_FIELDS <= set(c) for c in data["claims"]):
            return data
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        pass
    raise AchillesError(f"{file} is not a readable achilles report; run its recipe again or move the folder away")


def write_summary(folder: Path, out: Path | None = None) -> Path:
    """One row per claim across every ``*/report.json`` under ``folder``: the page a reader opens
    first. Written to ``out`` (default ``folder/README.md``)."""
    folder = Path(folder)
    reports = []
    for file in sorted(folder.glob("*/" + REPORT_JSON), key=lambda f: natural_key(f.parent.name)):
        reports.append((file.parent, _read_report(file)))
    out = Path(out) if out else folder / "README.md"
    if out.is_file() and not out.read_text(errors="replace").startswith(SUMMARY_TITLE):
        raise AchillesError(f"{out} exists and is not an achilles summary page; it is left as it is "
                            "(choose another folder)")
    total = {v: 0 for v in VERDICT_MARK}
    rows = []
    for path, data in reports:
        link = f"[{data['recipe']}]({os.path.relpath(path / REPORT_MD, out.parent)})"
        for c in data["claims"]:
            total[c["verdict"]] = total.get(c["verdict"], 0) + 1
            rows.append([link, c["statement"], f"{c['paper']} {c['where']}" + (f": {c['paper_value']}" if c["paper_value"] else ""),
                         c["measured"], VERDICT_MARK.get(c["verdict"], c["verdict"]), data["profile"]
                         + ("" if data.get("complete", True) else " (incomplete)")])
    lines = [SUMMARY_TITLE, "",
             "One row per claim of the three papers, as measured by `achilles reproduce` "
             "(each recipe's report has the figures, the budget and how it departs from the paper). "
             "Verdicts are computed from the runs, never written by hand: *held* when the whole 95% "
             "interval satisfies the claim's rule, *not held* when it misses it, *inconclusive* when it "
             "straddles it or runs are missing.", "",
             f"{len(reports)} recipe(s), {len(rows)} claim(s): {total['held']} held, {total['not held']} not held, "
             f"{total['inconclusive']} inconclusive.", "",
             _table(["recipe", "claim", "paper", "measured [95% interval]", "verdict", "profile"], rows), "",
             "Re-run any of them with `achilles reproduce NAME --profile quick` (see `achilles reproduce --list`).", ""]
    notes = folder / NOTES_MD
    if notes.is_file():  # hand-written reading of the numbers, kept beside the generated page
        lines[-1:-1] = ["", f"How to read these numbers, and what the probes add: [{NOTES_MD}]({os.path.relpath(notes, out.parent)})."]
    atomic_write_text(out, "\n".join(lines))
    return out
