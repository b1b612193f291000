"""Phase diagrams of a sweep (figure 4 of Achilles' Heel): x = gamma, y = depth, colour = the
mean over seeds of a final metric, each cell annotated with its value.

Axes: ``gamma`` across and ``n_layers`` up when the grid has them, else the grid's first two
axes. Every other grid axis gets its own figure per value (``phase_<metric>-<name><value>.png``).
A grid point with no finished seed is grey and marked ``n/a``.
"""

from __future__ import annotations

import itertools
import textwrap
import json
import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from achilles.sweep.sweep_spec import SweepSpec  # noqa: E402

_LABELS = {"gamma": "initialization rate γ", "n_layers": "depth (layers)", "d_model": "d_model"}


def choose_axes(grid_axes: list[str]) -> tuple[str | None, str | None, list[str]]:
    """(x axis, y axis, the other axes) of a phase diagram over ``grid_axes``."""
    axes = list(grid_axes)
    x = "gamma" if "gamma" in axes else (axes[0] if axes else None)
    rest = [a for a in axes if a != x]
    y = "n_layers" if "n_layers" in rest else (rest[0] if rest else None)
    return x, y, [a for a in rest if a != y]


def _key(value: Any) -> str:
    return json.dumps(value)


def _as_float(value: Any) -> float | None:
    if value in (None, ""):
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def phase_grid(rows: list[dict], metric: str, x: str | None, xs: list, y: str | None, ys: list,
               fixed: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """(means, finished-seed counts), shape (len(ys), len(xs)), over the finished rows."""
    sums = np.zeros((len(ys), len(xs)))
    counts = np.zeros((len(ys), len(xs)), dtype=int)
    xi = {_key(v): i for i, v in enumerate(xs)}
    yi = {_key(v): i for i, v in enumerate(ys)}
    for row in rows:
        if row.get("status") != "finished" or any(_key(row.get(k)) != _key(v) for k, v in fixed.items()):
            continue
        value = _as_float(row.get(metric))
        if value is None:
            continue
        i = yi.get(_key(row.get(y))) if y else 0
        j = xi.get(_key(row.get(x))) if x else 0
        if i is None or j is None:
            continue
        sums[i, j] += value
        counts[i, j] += 1
    with np.errstate(invalid="ignore"):
        means = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    return means, counts


_WORDS = {"acc": "accuracy", "exact": "exact-match rate", "answer_acc": "answer accuracy",
          "acc_seen_pairs": "accuracy on the anchor pairs seen in training",
          "forward_match_rate": "rate of picking the un-reversed (forward) match", "loss": "loss"}


def metric_words(metric: str) -> str:
    """What a phase panel plots, in words: ``test.acc_43_composite`` -> ``test accuracy on the
    held-out pair 43, scored against the composite answer``."""
    split, name = metric.split(".", 1) if "." in metric else ("", metric)
    parts = name.split("_")
    if name in _WORDS:
        words = _WORDS[name]
    elif len(parts) == 3 and parts[0] == "acc" and parts[1].isdigit():  # acc_43_composite
        words = f"accuracy on the held-out pair {parts[1]}, scored against the {parts[2]} answer"
    elif name.startswith("acc_pair_"):
        words = f"accuracy on anchor pair {name[len('acc_pair_'):]}"
    elif name.startswith("acc_index_"):
        words = f"accuracy when the answer is candidate {name[len('acc_index_'):]}"
    elif name.startswith("acc_"):
        words = f"accuracy on the {name[4:].replace('_', ' ')} samples"
    else:
        words = name.replace("_", " ")
    return f"{split} {words}".strip()


def _fmt_tick(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _panel(ax, means: np.ndarray, counts: np.ndarray, xs: list, ys: list, x: str | None, y: str | None,
           metric: str) -> Any:
    bounded = metric.split(".")[-1].startswith("acc")
    cmap = matplotlib.colormaps["viridis"].with_extremes(bad="#d0d0d0")
    im = ax.imshow(np.ma.masked_invalid(means), origin="lower", cmap=cmap, aspect="auto",
                   vmin=0.0 if bounded else None, vmax=1.0 if bounded else None)
    ax.set_xticks(range(len(xs)), [_fmt_tick(v) for v in xs])
    if y is None:  # a one-axis sweep: one row, nothing to label on y
        ax.set_yticks([])
    else:
        ax.set_yticks(range(len(ys)), [_fmt_tick(v) for v in ys])
    ax.set_xlabel(_LABELS.get(x, x or ""))
    ax.set_ylabel(_LABELS.get(y, y or ""))
    lo, hi = (0.0, 1.0) if bounded else (np.nanmin(means) if np.isfinite(means).any() else 0.0,
                                         np.nanmax(means) if np.isfinite(means).any() else 1.0)
    size = 9 if len(xs) <= 8 else 7
    for i in range(len(ys)):
        for j in range(len(xs)):
            if counts[i, j] == 0:
                ax.text(j, i, "n/a", ha="center", va="center", fontsize=size, color="#555555")
                continue
            v = means[i, j]
            light = (v - lo) / (hi - lo) > 0.6 if hi > lo else False
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=size,
                    color="black" if light else "white")
    words = metric_words(metric)
    width = max(34, int(6 * len(xs) + 16))  # characters a title line may take over this panel
    ax.set_title(textwrap.fill(f"{words[0].upper()}{words[1:]}", width, break_on_hyphens=False)
                 + f"\n(final {metric}, mean over seeds)",
                 fontsize=9)
    return im


def draw_phase(spec: SweepSpec, rows: list[dict], metrics: list[str], folder: str | Path) -> list[str]:
    """Write ``phase_<metric>.png`` for each metric (and ``phase.png`` with all side by side when
    there are several); return the paths written."""
    folder = Path(folder)
    x, y, others = choose_axes(list(spec.grid))
    xs = spec.grid[x] if x else [None]
    ys = spec.grid[y] if y else [None]
    written = []
    combos = list(itertools.product(*(spec.grid[o] for o in others))) or [()]
    seeds = len(spec.seeds)
    for combo in combos:
        fixed = dict(zip(others, combo))
        suffix = "".join(f"-{k.split('.', 1)[-1]}{_fmt_tick(v)}" for k, v in fixed.items())
        where = ", ".join(f"{k}={_fmt_tick(v)}" for k, v in fixed.items())
        title = (f"{spec.arch} on {spec.task}: mean over {seeds} seed{'s' if seeds > 1 else ''} "
                 f"(profile {spec.profile})" + (f"; {where}" if where else ""))
        grids = [(m, *phase_grid(rows, m, x, xs, y, ys, fixed)) for m in metrics]
        width = max(3.2, 0.75 * len(xs) + 1.8)
        height = max(2.6, 0.5 * len(ys) + 1.6)
        targets = [([g], f"phase_{g[0].split('.', 1)[-1]}{suffix}.png") for g in grids]
        if len(grids) > 1:
            targets.append((grids, f"phase{suffix}.png"))
        for panels, name in targets:
            fig, axes = plt.subplots(1, len(panels), figsize=(width * len(panels) + 0.6, height), squeeze=False)
            for ax, (metric, means, counts) in zip(axes[0], panels):
                im = _panel(ax, means, counts, xs, ys, x, y, metric)
                fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04).set_label(metric.split(".", 1)[-1], fontsize=8)
            fig.suptitle(title, fontsize=9)
            fig.tight_layout()
            path = folder / name
            tmp = folder / f".{name}.tmp.png"
            tmp.unlink(missing_ok=True)  # a leftover (or a link planted there) is replaced, never written through
            fig.savefig(tmp, dpi=100)
            plt.close(fig)
            tmp.replace(path)
            written.append(str(path))
    return written
