"""The report of a reproduction (report.md and report.json), and the summary page over many."""

from __future__ import annotations

import json
import os
import platform
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from achilles.errors import AchillesError
from achilles.runs.files import atomic_write_json, atomic_write_text
from achilles.recipes.registered import natural_key
from achilles.recipes.recipe_results import RecipeResults
from achilles.recipes.recipe import Plan, RunGroup
from achilles.recipes.subject import name_subject

REPORT_MD = "report.md"
REPORT_JSON = "report.json"
NOTES_MD = "NOTES.md"  # optional, hand-written: linked from the summary page
SUMMARY_TITLE = "# What achilles reproduces"
SUMMARY_FIELDS = {"statement", "paper", "where", "paper_value", "measured", "verdict"}
REPORT_FORMAT = "achilles-report/2"
#: report formats whose claims carry every per-run value and the rule's parameters (recomputable)
RECOMPUTABLE_FORMATS = {"achilles-report/2"}
VERDICT_MARK = {"held": "✅ held", "not held": "❌ not held", "inconclusive": "⚠️ inconclusive"}


def machine() -> str:
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cores = os.cpu_count() or 0
    text = f"{platform.machine()}, {cores} CPU core(s)"
    try:
        import torch

        from achilles.training.precision import cpu_description

        text = f"{cpu_description()['model']} ({text}), torch {torch.__version__}"
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
    from achilles.contract.lookup import registry
    from achilles.training.profiles import settings_for

    task_cls = registry("task").get(group.task).factory
    s = settings_for(plan.training_profile, getattr(task_cls, "training_defaults", {}), **dict(group.train))
    model = {**getattr(task_cls, "model_defaults", {}), **dict(group.model)}
    samples = s.train_samples
    if samples is None:
        try:
            from achilles.contract.lookup import get_task

            samples = get_task(group.task, **dict(group.task_settings)).split_sizes()["train"]
        except Exception:  # a task that needs model settings to size itself
            samples = None
    grid = ", ".join(f"{k} ∈ {{{', '.join(str(v) for v in vals)}}}" for k, vals in group.grid.items())
    return {"group": group.name, "arch": group.arch, "task": group.task,
            "task_settings": dict(group.task_settings), "model": model, "grid": grid,
            "seeds": group.seeds, "runs": group.runs, "train_samples": samples, "epochs": s.epochs,
            "batch_size": s.batch_size, "lr": f"{s.lr_start:g} → {s.lr_peak:g} → {s.lr_start:g}",
            "warmup_epochs": s.warmup_epochs, "eval_samples": s.eval_samples,
            "profile": plan.training_profile,
            # as set, else the device's default (bf16 for paper on a GPU, fp32 otherwise): write_report
            # replaces it with what the group's runs recorded
            "precision": s.precision or "default"}


def _settings_text(d: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in d.items()) or "defaults"


def write_report(results: RecipeResults, claims: list[dict[str, Any]], figures: list[dict[str, str]],
                 out: Path, seconds: float = 0.0) -> Path:
    """Write report.md and report.json into ``out``; return the path of report.md."""
    from achilles import __version__

    recipe, plan = results.recipe, results.plan
    out = Path(out)
    missing = [f"{r.label}: {r.status} ({os.path.relpath(r.path, out)})" for r in results.missing]
    budgets = [group_budget(g, plan) for g in plan.runs]
    for b in budgets:  # the precision the group's runs trained in, as their run.json records it
        recorded = sorted({str((r.config.get("training") or {}).get("precision") or "fp32")
                           for r in results.runs if r.group == b["group"]})
        if recorded:
            b["precision"] = "/".join(recorded)
    runs = [{"group": r.group, "values": r.values, "seed": r.seed, "status": r.status,
             "epochs": r.config.get("epochs_completed"), "path": os.path.relpath(r.path, out),
             "headline": r.config.get("headline"), "weights_sha256": r.config.get("weights_sha256")}
            for r in results.runs]
    paths = {r.label: r.path for r in results.runs}
    for c in claims:
        if compares_runs_with_themselves(c, paths):
            c["same_runs"] = True
            c["why"] = (f"{c.get('why', '')} Both sides of this comparison are the same runs (the tested subject is "
                        f"also this claim's control), so it measures nothing.").strip()
    claims = [name_subject(c, recipe) for c in claims]  # "mamba2 test accuracy" read on deltanet says deltanet
    counts = {v: sum(c["verdict"] == v for c in claims) for v in ("held", "not held", "inconclusive")}
    data = {"format": REPORT_FORMAT, "recipe": recipe.name, "title": recipe.title,
            "paper": {"label": recipe.paper.label, "title": recipe.paper.title, "arxiv": recipe.paper.arxiv},
            "source": recipe.source, "profile": results.profile, "summary": recipe.summary,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "achilles_version": __version__, "machine": machine(), "seconds": round(seconds, 1),
            "complete": not missing, "missing": missing, "verdicts": counts, "claims": claims,
            "figures": figures, "budget": budgets, "paper_budget": dict(recipe.paper_budget),
            "departures": plan.departures, "runs": runs,
            "subject": {"arch": recipe.tested_subject or recipe.subject, "paper": recipe.subject,
                        "groups": list(recipe.swapped_groups) or [g.name for g in plan.runs if g.arch == recipe.subject],
                        "note": recipe.subject_note}}
    atomic_write_json(out / REPORT_JSON, data)
    atomic_write_text(out / REPORT_MD, render_markdown(data))
    return out / REPORT_MD


def compares_runs_with_themselves(claim: dict[str, Any], paths: dict[str, Path]) -> bool:
    """Whether a difference's two sides read the very same runs: a subject swapped in for a control
    of its own architecture (``transformer-rope`` in the place of Mamba2, compared with the rotary
    control). ``paths``: each run's label -> folder."""
    sides = (claim.get("measurement") or {}).get("sides") or {}
    if set(sides) != {"a", "b"}:
        return False

    def labels(side: dict[str, Any]) -> list[str]:
        return [label for o in side.get("per_run") or [] for label in str(o.get("run", "")).split(", ")]

    def metric(side: dict[str, Any]) -> str:  # what a side reads, its group names taken out
        text = str(side.get("method", ""))
        for group in sorted({label.split("[")[0] for label in labels(side)}, key=len, reverse=True):
            text = text.replace(group, "")
        return text

    a, b = ({paths.get(label) for label in labels(sides[k])} for k in "ab")
    # the same runs read twice the same way; the same runs at two string lengths are a real comparison
    return bool(a) and None not in a and a == b and metric(sides["a"]) == metric(sides["b"])


def render_markdown(data: dict[str, Any]) -> str:
    paper = data["paper"]
    lines = [f"# {data['recipe']}: {data['title']}", "",
             f"*{paper['title']}* ([arXiv:{paper['arxiv']}](https://arxiv.org/abs/{paper['arxiv']})), "
             f"{data['source']}. Profile **{data['profile']}**; achilles {data['achilles_version']}; "
             f"{data['machine']}; written {data['created']}.", "", data["summary"], ""]
    subject = data.get("subject") or {}
    if subject.get("note"):
        lines += [f"> **{subject['note']}**", ""]
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
             c["measured"], _n_short(c), c["rule"], VERDICT_MARK.get(c["verdict"], c["verdict"])
             + (" (same runs on both sides: no finding)" if c.get("same_runs") else "")] for c in data["claims"]]
    lines += [_table(["claim", "paper", "measured [95% interval]", "n", "rule (basis)", "verdict"], rows), ""]
    lines += ["How each number was measured (every per-run value is in `report.json`, from which each verdict "
              "can be recomputed):", ""]
    for c in data["claims"]:
        m = c["measurement"]
        parts = [c["measured_as"], m["method"], m.get("counts") or "", f"Verdict: {c['why']}"]
        lines.append(f"- **{c['id']}**: " + " ".join(p.rstrip(".") + "." for p in parts if p))
        values = _per_run_text(m)
        if values:
            lines.append(f"  - per run: {values}")
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
             b["seeds"], b["runs"], b["train_samples"], b["epochs"], b["batch_size"], b["lr"],
             b.get("precision", "fp32")] for b in data["budget"]]
    lines += [_table(["group", "arch", "task", "model", "seeds", "runs", "train samples", "epochs", "batch", "lr",
                      "precision"], rows), ""]
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


def _n_short(claim: dict[str, Any]) -> str:
    """What a claim's n counts, in a table cell: "5 runs", "5 pairs", "12 cells", "1 run × 2,000"."""
    m = claim["measurement"]
    if m.get("value") is None:
        return "-"
    kind, runs = m.get("interval"), len(m.get("per_run") or [])
    if kind == "paired-t":
        return f"{runs} pairs"
    if kind in ("welch", "bounds"):
        sides = m.get("sides") or {}
        return " vs ".join(str(len((sides.get(k) or {}).get("per_run") or [])) for k in ("a", "b")) + " runs"
    if kind == "wilson-cells":
        return f"{runs} cells"
    if kind == "wilson" and runs == 1:
        return f"1 run × {m['per_run'][0].get('n') or 0:,}"
    return f"{runs} runs"


def _per_run_text(m: dict[str, Any], limit: int = 12) -> str:
    """The per-run values of a measurement (both sides for an unpaired difference), compactly."""
    def values(obs: list[dict]) -> str:
        shown = ", ".join(f"{o['value']:.3f}" for o in obs[:limit])
        return shown + (f", … ({len(obs)} in all)" if len(obs) > limit else "")

    if m.get("per_run"):
        return values(m["per_run"])
    sides = m.get("sides") or {}
    if sides:
        return "; ".join(f"{k}: {values(v.get('per_run') or [])}" for k, v in sides.items())
    return ""


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
            _check_field_types(file, data)
            return data
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        pass
    raise AchillesError(f"{file} is not a readable achilles report; run its recipe again or move the folder away")


def _check_field_types(file: Path, data: dict) -> None:
    """One line naming the field of a report.json whose type is not what the summary reads (issue 19)."""
    expected = {"statement": (str,), "paper": (str,), "where": (str,), "measured": (str,), "verdict": (str,),
                "paper_value": (str, int, float, type(None)), "measurement": (dict, type(None)),
                "id": (str,)}
    fields = [("complete", data["complete"], (bool,))] if "complete" in data else []
    fields += [(f"claims[{i}].{key}", c[key], kinds) for i, c in enumerate(data["claims"])
               for key, kinds in expected.items() if key in c]
    for where, value, kinds in fields:
        if not isinstance(value, kinds):
            shown = json.dumps(value)[:40]
            kinds_text = " or ".join(dict.fromkeys(_KIND_NAMES[k] for k in kinds))
            raise AchillesError(f"{file}: {where} is {shown}, not {kinds_text}; "
                                "the report is corrupt: run its recipe again or move the folder away")


_KIND_NAMES = {str: "text", int: "a number", float: "a number", type(None): "null", dict: "an object", bool: "true/false"}


def recomputable(report: dict[str, Any], claim: dict[str, Any]) -> bool:
    """Whether ``claim`` of ``report`` carries what a reader needs to recompute its verdict: the
    rule's parameters and the per-run values of every side."""
    if report.get("format") not in RECOMPUTABLE_FORMATS or not isinstance(claim.get("rule_spec"), dict):
        return False
    m = claim.get("measurement")
    if not isinstance(m, dict):
        return False
    if m.get("value") is None:
        return True  # nothing measured: the verdict is inconclusive by construction
    return bool(m.get("per_run")) or bool(m.get("sides"))


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
    old = []
    for path, data in reports:
        link = f"[{data['recipe']}]({os.path.relpath(path / REPORT_MD, out.parent)})"
        for c in data["claims"]:
            total[c["verdict"]] = total.get(c["verdict"], 0) + 1
            stale = not recomputable(data, c)
            if stale:
                old.append(f"{data['recipe']}: {c.get('id', c['statement'])}")
            rows.append([link, c["statement"], f"{c['paper']} {c['where']}" + (f": {c['paper_value']}" if c["paper_value"] else ""),
                         c["measured"], VERDICT_MARK.get(c["verdict"], c["verdict"])
                         + (" (per-run values missing: old report, not recomputable)" if stale else ""),
                         data["profile"] + ("" if data.get("complete", True) else " (incomplete)")])
    lines = [SUMMARY_TITLE, "",
             "One row per claim of the three papers, as measured by `achilles reproduce` "
             "(each recipe's report has the figures, the budget and how it departs from the paper). "
             "Verdicts are computed from the runs, never written by hand: *held* when the whole 95% "
             "interval satisfies the claim's rule, *not held* when it misses it, *inconclusive* when it "
             "straddles it or runs are missing.", "",
             f"{len(reports)} recipe(s), {len(rows)} claim(s): {total['held']} held, {total['not held']} not held, "
             f"{total['inconclusive']} inconclusive"
             + (f"; {len(old)} of them from older reports without per-run values (re-run their recipes to make "
                "them recomputable)." if old else "."), "",
             _table(["recipe", "claim", "paper", "measured [95% interval]", "verdict", "profile"], rows), "",
             "Re-run any of them with `achilles reproduce NAME --profile quick` (see `achilles reproduce --list`).", ""]
    notes = folder / NOTES_MD
    if notes.is_file():  # hand-written reading of the numbers, kept beside the generated page
        lines[-1:-1] = ["", f"How to read these numbers, and what the probes add: [{NOTES_MD}]({os.path.relpath(notes, out.parent)})."]
    for atlas in sorted(p.parent for p in folder.glob("*/atlas.json")):  # an `achilles atlas` page beside the reports
        lines[-1:-1] = ["", "Which other sequence mixers share these findings: the atlas, "
                        f"[{atlas.name}/README.md]({os.path.relpath(atlas / 'README.md', out.parent)})."]
    atomic_write_text(out, "\n".join(lines))
    return out
