"""The Achilles atlas: every claim of a set of recipes, measured on every subject architecture.

``achilles atlas`` runs a matrix of recipes × subjects through the recipe runner (one pool of
workers, one run store, finished runs reused, resumable) and writes::

    OUT/README.md            one row per claim, one column per architecture: verdict and value,
                             each linked to the report it comes from
    OUT/atlas.png            the same table as a heatmap
    OUT/atlas.json           the same, for machines
    OUT/<subject>/<recipe>/  each cell's ordinary reproduction (report.md, report.json, figures/)
    OUT/runs/                the run store shared by every cell (controls train once)

The page keeps the columns and rows an earlier ``atlas`` wrote into the same OUT (``with_earlier``),
so an atlas too long for one sitting is run a few cells at a time into one page.
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Any, Sequence

from achilles.errors import AchillesError
from achilles.runs.files import atomic_write_json, atomic_write_text
from achilles.recipes.report import REPORT_JSON, REPORT_MD
from achilles.recipes.recipe import Recipe
from achilles.recipes.registered import get_recipe

log = logging.getLogger("achilles.recipes")

ATLAS_TITLE = "# The Achilles atlas"
#: the recipes whose findings the atlas asks of every architecture, and the architectures it asks
DEFAULT_RECIPES = ("achilles-fig4", "achilles-fig9", "copy-length", "shortcuts-position")
DEFAULT_SUBJECTS = ("mamba2", "mamba1", "deltanet", "deltanet-noconv", "lstm", "transformer", "transformer-rope")
MARK = {"held": "✅", "not held": "❌", "inconclusive": "⚠️", "failed": "💥", "missing": "·", "self": "="}
CODE = {"held": 1.0, "not held": -1.0, "inconclusive": 0.0}


def cell_folder(out: Path, subject: str, recipe: str) -> Path:
    return Path(out) / subject / recipe


def read_cell(out: Path, subject: str, recipe: str) -> dict[str, Any] | None:
    """A cell's report.json (None before it exists)."""
    file = cell_folder(out, subject, recipe) / REPORT_JSON
    if not file.is_file():
        return None
    try:
        return json.loads(file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        raise AchillesError(f"{file} is not a readable report; run the atlas again or move the folder away") from None


def subject_failed(report: dict[str, Any]) -> bool:
    """Whether a run of the subject's groups failed (the cell shows 'failed', not a verdict)."""
    groups = set((report.get("subject") or {}).get("groups") or [])
    return any(r.get("status") == "failed" and r.get("group") in groups for r in report.get("runs", []))


def table(out: Path, recipes: Sequence[Recipe], subjects: Sequence[str]) -> list[dict[str, Any]]:
    """One row per (recipe, claim): {recipe, claim, statement, cells: {subject: {verdict, measured, value, link}}}."""
    rows = []
    for recipe in recipes:
        reports = {s: read_cell(out, s, recipe.name) for s in subjects}
        for claim in recipe.claims:
            cells = {}
            for s in subjects:
                report = reports[s]
                entry = next((c for c in (report or {}).get("claims", []) if c.get("id") == claim.id), None)
                if report is None or entry is None:
                    cells[s] = {"verdict": "missing", "measured": "", "value": None, "link": ""}
                    continue
                verdict = ("failed" if subject_failed(report)
                           else "self" if entry.get("same_runs") else entry["verdict"])
                cells[s] = {"verdict": verdict, "measured": entry["measured"],
                            "value": (entry.get("measurement") or {}).get("value"),
                            "link": os.path.relpath(cell_folder(out, s, recipe.name) / REPORT_MD, out)}
            rows.append({"recipe": recipe.name, "claim": claim.id, "statement": claim.statement, "cells": cells})
    return rows


def with_earlier(out: Path, recipes: Sequence[Recipe], subjects: Sequence[str]) -> tuple[list[Recipe], list[str]]:
    """The recipes and subjects of the page at ``out``: those an earlier atlas wrote there (its
    atlas.json), in their order, then the new ones. An earlier recipe no longer registered is left
    off, said."""
    file = Path(out) / "atlas.json"
    try:
        earlier = json.loads(file.read_text()) if file.is_file() else {}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        earlier = {}
    if not isinstance(earlier, dict) or earlier.get("format") != "achilles-atlas/1":
        return list(recipes), list(subjects)
    given = {r.name: r for r in recipes}
    earlier_names = [n for n in earlier.get("recipes") or [] if isinstance(n, str)]
    merged_recipes = []
    for name in earlier_names:
        try:
            merged_recipes.append(given[name] if name in given else get_recipe(name))
        except AchillesError:
            log.warning("The atlas page's earlier recipe %r is not registered now; its rows are left off", name)
    merged_recipes += [r for r in recipes if r.name not in earlier_names]
    earlier_subjects = [s for s in earlier.get("subjects") or [] if isinstance(s, str)]
    merged_subjects = earlier_subjects + [s for s in subjects if s not in earlier_subjects]
    return merged_recipes, merged_subjects


def _budget(report: dict[str, Any] | None) -> list:
    """A cell report's budget rows ([] where absent or not a list: a hand-edited report must not stop the page)."""
    budget = report.get("budget") if isinstance(report, dict) else None
    return budget if isinstance(budget, list) else []


def seeds_line(out: Path, recipes: Sequence[Recipe], subjects: Sequence[str]) -> list[str]:
    """"Seeds per run group: ..." read from the cells' budgets, since rows may be run at different
    ``--seeds`` and a cell's interval width depends on it (empty before any cell exists)."""
    parts = []
    for recipe in recipes:
        budgets = [b for s in subjects for b in _budget(read_cell(out, s, recipe.name))]
        counts = sorted({b["seeds"] for b in budgets if isinstance(b, dict) and isinstance(b.get("seeds"), int)})
        if counts:
            parts.append(f"{recipe.name} {' or '.join(map(str, counts))}")
    return [f"Seeds per run group: {'; '.join(parts)}.", ""] if parts else []


def write_atlas(out: Path, recipes: Sequence[Recipe], subjects: Sequence[str], profile: str) -> Path:
    """README.md, atlas.json and atlas.png of the cells under ``out``; returns README.md's path."""
    out = Path(out)
    page = out / "README.md"
    if page.is_file() and not page.read_text(errors="replace").startswith(ATLAS_TITLE):
        raise AchillesError(f"{page} exists and is not an atlas page; it is left as it is (choose another --out)")
    rows = table(out, recipes, subjects)
    figure = draw_heatmap(rows, subjects, out / "atlas.png")
    atomic_write_json(out / "atlas.json", {"format": "achilles-atlas/1", "profile": profile,
                                           "subjects": list(subjects), "recipes": [r.name for r in recipes],
                                           "rows": rows})
    counts = {s: {v: sum(r["cells"][s]["verdict"] == v for r in rows) for v in MARK} for s in subjects}
    lines = [ATLAS_TITLE, "",
             "Which sequence mixers share Mamba's Achilles' heel? Each row is a claim of the papers (about "
             "Mamba); each column is the architecture it was measured on, in the place of the paper's subject, "
             "with the recipe's controls (the Transformer, the residual Mamba2, ...) unchanged. Each cell is the "
             "verdict computed by the claim's rule and the measured value, linked to its report: "
             "✅ held, ❌ not held, ⚠️ inconclusive, 💥 a run of the subject failed, · not run yet, = the "
             "claim compares the subject with a control that is the same runs (no verdict).", "",
             f"Profile **{profile}**. Recipes: {', '.join(r.name for r in recipes)}.", "",
             *seeds_line(out, recipes, subjects),
             "| recipe | claim | " + " | ".join(subjects) + " |",
             "|---|---|" + "---|" * len(subjects)]
    for row in rows:
        cells = []
        for s in subjects:
            c = row["cells"][s]
            text = MARK[c["verdict"]] + (f" {c['value']:.2f}" if isinstance(c["value"], (int, float)) and
                                         c["verdict"] not in ("failed", "missing", "self") else "")
            cells.append(f"[{text}]({c['link']})" if c["link"] else text)
        statement = row["statement"].replace("|", "\\|")
        lines.append(f"| {row['recipe']} | {statement} | " + " | ".join(cells) + " |")
    lines += ["", "Per architecture: " + "; ".join(
        f"**{s}** {counts[s]['held']} held, {counts[s]['not held']} not held, {counts[s]['inconclusive']} "
        f"inconclusive" + (f", {counts[s]['failed']} failed" if counts[s]["failed"] else "")
        + (f", {counts[s]['missing']} not run" if counts[s]["missing"] else "")
        + (f", {counts[s]['self']} compared with itself" if counts[s]["self"] else "") for s in subjects) + ".", ""]
    if figure:
        lines += [f"![The atlas as a heatmap]({figure.name})", ""]
    lines += ["Re-run or extend it with `achilles atlas --subjects ARCH,... --recipes NAME,...` (finished runs are "
              "reused); a third-party architecture joins by being registered (see docs/plugins.md).", ""]
    atomic_write_text(page, "\n".join(lines))
    return page


def draw_heatmap(rows: list[dict[str, Any]], subjects: Sequence[str], path: Path) -> Path | None:
    """Verdicts as colours (held green, not held red, inconclusive yellow), values written in."""
    if not rows:
        return None
    from matplotlib.colors import ListedColormap

    from achilles.runs.figures import plt

    grid = [[CODE.get(r["cells"][s]["verdict"], math.nan) for s in subjects] for r in rows]
    fig, ax = plt.subplots(figsize=(max(8.0, 1.1 * len(subjects) + 4.5), 0.38 * len(rows) + 1.6),
                           layout="constrained")
    cmap = ListedColormap(["#d65f5f", "#f2d16b", "#6acc65"]).with_extremes(bad="#dddddd")
    ax.imshow(grid, cmap=cmap, vmin=-1.5, vmax=1.5, aspect="auto")
    for i, r in enumerate(rows):
        for j, s in enumerate(subjects):
            c = r["cells"][s]
            text = {"failed": "failed", "missing": "-", "self": "same runs"}.get(c["verdict"])
            if text is None:
                text = f"{c['value']:.2f}" if isinstance(c["value"], (int, float)) else "n/a"
            ax.text(j, i, text, ha="center", va="center", fontsize=7)
    ax.set_xticks(range(len(subjects)), subjects, rotation=30, ha="right")
    ax.set_yticks(range(len(rows)), [f"{r['recipe']}: {r['claim']}" for r in rows], fontsize=7)
    ax.set_title("Achilles atlas: verdict per claim and architecture\n"
                 "green held · red not held · yellow inconclusive · grey failed, not run or same runs", fontsize=9)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
    return path
