"""The results of a sweep: one row per cell (``results.csv``), the mean over seeds per grid point
(the terminal table), and the phase-diagram metrics the task declares."""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Any

from achilles.contract.lookup import registry
from achilles.runs.folder import RunFolder
from achilles.runs.files import atomic_write_text
from achilles.sweep.plan import Cell, plan_cells, read_status
from achilles.sweep.sweep_spec import SweepSpec

RESULTS_CSV = "results.csv"


def phase_metrics(spec: SweepSpec) -> list[str]:
    """The ``split.metric`` columns the phase diagram draws: the task's declared ``phase_metrics``
    (on its headline split unless a name says its split), else its headline metric."""
    task_cls = registry("task").get(spec.task).factory
    split = spec.headline_split()
    declared = getattr(task_cls, "phase_metrics", None) or (getattr(task_cls, "headline_metric", "acc"),)
    return [m if "." in m else f"{split}.{m}" for m in declared]


def collect_results(spec: SweepSpec, cells: list[Cell], folder: str | Path) -> list[dict]:
    """One row per cell from its run folder (status, epochs, final metrics of the headline split
    and of test)."""
    head_split = spec.headline_split()
    folder = Path(folder)
    rows = []
    for cell in cells:
        status, epoch = read_status(cell.path)
        row: dict[str, Any] = {**cell.values, "seed": cell.seed, "status": status, "epochs": epoch,
                               "run": os.path.relpath(cell.path, folder)}
        if status != "pending":
            final = RunFolder(cell.path).read_config().get("final_metrics") or {}
            for split, metrics in final.items():
                if split == head_split or split == "test":
                    for name, value in metrics.items():
                        row[f"{split}.{name}"] = value
        rows.append(row)
    return rows


def write_csv(rows: list[dict], path: str | Path) -> None:
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, restval="", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (json.dumps(v) if isinstance(v, (list, dict)) else v) for k, v in row.items()})
    atomic_write_text(path, buf.getvalue())


def read_csv(path: str | Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def mean_table(spec: SweepSpec, rows: list[dict], metrics: list[str]) -> tuple[list[list], list[str]]:
    """Rows of (grid values..., seeds finished, mean of each metric) for the terminal."""
    axes = list(spec.grid)
    groups: dict[str, list[dict]] = {}
    for row in rows:
        groups.setdefault(json.dumps([row.get(a) for a in axes]), []).append(row)
    out = []
    for key, members in groups.items():
        finished = [r for r in members if r["status"] == "finished"]
        means = []
        for m in metrics:
            vals = [float(r[m]) for r in finished if r.get(m) not in (None, "")]
            means.append(sum(vals) / len(vals) if vals else None)
        statuses = sorted({r["status"] for r in members} - {"finished"})
        shown = [f"{v:g}" if isinstance(v, float) else v for v in json.loads(key)]
        out.append(shown + [f"{len(finished)}/{len(members)}" + (f" ({', '.join(statuses)})" if statuses else "")] + means)
    return out, axes + ["finished"] + [f"mean {m}" for m in metrics]


def aggregate(folder: str | Path, spec: SweepSpec | None = None, cells: list[Cell] | None = None,
              metrics: list[str] | None = None, draw: bool = True) -> tuple[list[dict], list[str], list[str]]:
    """Write results.csv (and the phase heatmaps) of a sweep folder; return (rows, metrics, figures)."""
    folder = Path(folder)
    spec = spec or SweepSpec.load(folder)
    cells = cells if cells is not None else plan_cells(spec, folder)
    rows = collect_results(spec, cells, folder)
    write_csv(rows, folder / RESULTS_CSV)
    split = spec.headline_split()
    metrics = [m if "." in m else f"{split}.{m}" for m in metrics] if metrics else phase_metrics(spec)
    figures = []
    if draw and any(r["status"] == "finished" for r in rows):
        from achilles.sweep.phase import draw_phase  # matplotlib: only when a figure is drawn

        figures = draw_phase(spec, rows, metrics, folder)
    return rows, metrics, figures
