"""Figures of the first-party recipes, drawn from a recipe's results (every axis labelled, integer
epochs, error bars over seeds, chance levels marked where a task has one)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable, Sequence

from achilles.runs.figures import plt
from achilles.recipes import RecipeResults

COLORS = ("#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860")


def _save(fig, path: Path) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)


def _mean_sd(values: Sequence[float]) -> tuple[float, float]:
    if not values:
        return math.nan, 0.0
    mean = sum(values) / len(values)
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return mean, sd


def bars(groups: Sequence[tuple[str, str]], metrics: Sequence[tuple[str, str, str | None, str]], *,
         title: str, ylabel: str = "accuracy", chance: float | None = None,
         where: dict | None = None) -> Callable[[RecipeResults, Path], None]:
    """Grouped bars: one cluster per (group, label), one bar per (split, metric, eval, label);
    height = mean over the finished runs, error bar = their standard deviation, dots = each run."""

    def draw(results: RecipeResults, path: Path) -> None:
        fig, ax = plt.subplots(figsize=(max(5.0, 1.3 * len(groups) * max(1, len(metrics)) / 2 + 2), 3.8),
                               layout="constrained")
        width = 0.8 / max(1, len(metrics))
        for j, (split, metric, eval_name, label) in enumerate(metrics):
            xs, means, sds, tops = [], [], [], []
            for i, (group, _) in enumerate(groups):
                values, _, _ = results.metric(group, metric, split=split, eval=eval_name, where=where)
                mean, sd = _mean_sd(values)
                x = i + (j - (len(metrics) - 1) / 2) * width
                xs.append(x)
                means.append(mean)
                sds.append(sd)
                tops.append(max([0.0 if math.isnan(mean) else mean + sd, *values]))  # label above bar, bar and dots
                ax.scatter([x] * len(values), values, s=10, color="black", zorder=3)
            ax.bar(xs, [0 if math.isnan(m) else m for m in means], width * 0.92, yerr=sds, capsize=3,
                   color=COLORS[j % len(COLORS)], label=label)
            for x, m, top in zip(xs, means, tops):
                ax.text(x, min(top, 1.0) + 0.02, "n/a" if math.isnan(m) else f"{m:.2f}", ha="center", fontsize=7)
        if chance is not None:
            ax.axhline(chance, color="grey", ls="--", lw=0.8, label=f"chance ({chance:g})")
        ax.set_xticks(range(len(groups)), [label for _, label in groups])
        ax.set_ylabel(ylabel)
        ax.set_ylim(0, 1.12)
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=min(4, len(metrics) + 1),
                  frameon=False)
        _save(fig, path)

    return draw


def curves(groups: Sequence[tuple[str, str]], split: str, metric: str, *, title: str,
           ylabel: str = "accuracy", chance: float | None = None,
           where: dict | None = None) -> Callable[[RecipeResults, Path], None]:
    """``split.metric`` per epoch: one line per group (mean over runs, band = min..max)."""

    def draw(results: RecipeResults, path: Path) -> None:
        fig, ax = plt.subplots(figsize=(6.0, 3.6), layout="constrained")
        top = 1
        for i, (group, label) in enumerate(groups):
            per_epoch: dict[int, list[float]] = {}
            for run in results.group(group, where):
                for record in results.curves(run):
                    value = (record.get("metrics") or {}).get(split, {}).get(metric)
                    if value is not None:
                        per_epoch.setdefault(int(record["epoch"]), []).append(float(value))
            if not per_epoch:
                continue
            epochs = sorted(per_epoch)
            top = max(top, epochs[-1])
            means = [sum(per_epoch[e]) / len(per_epoch[e]) for e in epochs]
            color = COLORS[i % len(COLORS)]
            ax.plot(epochs, means, marker="o", ms=3, color=color, label=label)
            ax.fill_between(epochs, [min(per_epoch[e]) for e in epochs], [max(per_epoch[e]) for e in epochs],
                            color=color, alpha=0.15, lw=0)
        if chance is not None:
            ax.axhline(chance, color="grey", ls="--", lw=0.8, label=f"chance ({chance:g})")
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.set_xlim(0.5, top + 0.5)
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=7)
        _save(fig, path)

    return draw


def heatmaps(group: str, panels: Sequence[tuple[str, str, str]], *, title: str, x: str = "gamma",
             y: str = "n_layers") -> Callable[[RecipeResults, Path], None]:
    """Phase diagrams (figure 4 style): one panel per (split, metric, label); x = ``x``, y = ``y``,
    colour = mean over seeds, each cell annotated; cells with no finished run are grey."""
    labels = {"gamma": "initialization rate γ", "n_layers": "depth (layers)", "d_model": "d_model"}

    def draw(results: RecipeResults, path: Path) -> None:
        runs = results.group(group)
        xs = sorted({r.values.get(x) for r in runs})
        ys = sorted({r.values.get(y) for r in runs})
        fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels) + 0.8, 0.55 * len(ys) + 2.0),
                                 squeeze=False, layout="constrained")
        for ax, (split, metric, label) in zip(axes[0], panels):
            grid = [[math.nan] * len(xs) for _ in ys]
            for yi, yv in enumerate(ys):
                for xi, xv in enumerate(xs):
                    values, _, _ = results.metric(group, metric, split=split, where={x: xv, y: yv})
                    if values:
                        grid[yi][xi] = sum(values) / len(values)
            import numpy as np

            data = np.ma.masked_invalid(np.array(grid, dtype=float))
            cmap = plt.get_cmap("viridis").with_extremes(bad="#d0d0d0")
            im = ax.imshow(data, origin="lower", cmap=cmap, vmin=0, vmax=1, aspect="auto")
            for yi in range(len(ys)):
                for xi in range(len(xs)):
                    v = grid[yi][xi]
                    ax.text(xi, yi, "n/a" if math.isnan(v) else f"{v:.2f}", ha="center", va="center",
                            fontsize=8, color="black" if (not math.isnan(v) and v > 0.6) else "white")
            ax.set_xticks(range(len(xs)), [f"{v:g}" if isinstance(v, float) else str(v) for v in xs])
            ax.set_yticks(range(len(ys)), [str(v) for v in ys])
            ax.set_xlabel(labels.get(x, x))
            ax.set_ylabel(labels.get(y, y))
            ax.set_title(label, fontsize=9)
            fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="accuracy")
        fig.suptitle(title, fontsize=10)
        _save(fig, path)

    return draw


def probe_by_position(group: str, probe: str, key: str, *, title: str, ylabel: str,
                      where: dict | None = None, only=None) -> Callable[[RecipeResults, Path], None]:
    """A probe's per-key-position fractions (``{position: {"fraction", "n"}}`` under ``key``),
    pooled over the group's runs (those ``only`` selects): one bar per key position."""

    def draw(results: RecipeResults, path: Path) -> None:
        hits: dict[int, list[float]] = {}
        runs, _, note = results.selected(group, where, only)
        for run in runs:
            table = (run.probes.get(probe) or {}).get(key) or {}
            for position, entry in table.items():
                hits.setdefault(int(position), [0.0, 0.0])
                hits[int(position)][0] += entry["fraction"] * entry["n"]
                hits[int(position)][1] += entry["n"]
        fig, ax = plt.subplots(figsize=(5.2, 3.4), layout="constrained")
        positions = sorted(hits)
        values = [hits[p][0] / hits[p][1] if hits[p][1] else 0.0 for p in positions]
        ax.bar(positions, values, color=COLORS[0])
        for p, v in zip(positions, values):
            ax.text(p, v + 0.02, f"{v:.2f}\nn={int(hits[p][1])}", ha="center", fontsize=7)
        ax.set_xticks(positions)
        ax.set_xlabel("key position p (anchors at p+1, p+2)")
        ax.set_ylabel(ylabel)
        ax.set_ylim(0, 1.2)
        ax.set_title(title + (f"\n{note}" if note else ""), fontsize=9)
        _save(fig, path)

    return draw


def lines_by(group_labels: Sequence[tuple[str, str]], axis: Callable[[Any], float], metric_of: Callable,
             *, xlabel: str, title: str, ylabel: str = "accuracy") -> Callable[[RecipeResults, Path], None]:
    """A metric against a numeric axis (problem size, width): one line per group, mean over runs.
    ``metric_of(run)`` returns ``{x: value}`` for one run."""

    def draw(results: RecipeResults, path: Path) -> None:
        fig, ax = plt.subplots(figsize=(6.0, 3.6), layout="constrained")
        for i, (group, label) in enumerate(group_labels):
            pooled: dict[float, list[float]] = {}
            for run in results.group(group):
                if not run.finished:
                    continue
                for xv, value in metric_of(run).items():
                    pooled.setdefault(axis(xv), []).append(value)
            if not pooled:
                continue
            xs = sorted(pooled)
            ax.plot(xs, [sum(pooled[v]) / len(pooled[v]) for v in xs], marker="o", ms=3,
                    color=COLORS[i % len(COLORS)], label=label)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=7)
        _save(fig, path)

    return draw


def tap_similarity(group: str, *, title: str) -> Callable[[RecipeResults, Path], None]:
    """Figure 12: per layer, the cosine similarity between the convolution's taps at initialization
    and after training (the ``conv-similarity`` probe's matrices), averaged over the group's runs."""

    def draw(results: RecipeResults, path: Path) -> None:
        import numpy as np

        layers: dict[int, dict[str, list]] = {}
        runs = [r for r in results.group(group) if r.finished and "conv-similarity" in r.probes]
        for run in runs:
            for layer in run.probes["conv-similarity"].get("layers", []):
                for when in ("init", "final"):
                    if layer.get(when) is not None:
                        layers.setdefault(layer["layer"], {}).setdefault(when, []).append(np.array(layer[when]))
        if not layers:
            return
        fig, axes = plt.subplots(len(layers), 2, figsize=(6.4, 3.0 * len(layers)), layout="constrained",
                                 squeeze=False)
        for row, (index, by_when) in enumerate(sorted(layers.items())):
            for col, (when, label) in enumerate((("init", "at initialization"), ("final", "after training"))):
                ax = axes[row][col]
                if when not in by_when:
                    ax.set_axis_off()
                    continue
                matrix = np.mean(by_when[when], axis=0)
                width = matrix.shape[0]
                image = ax.imshow(matrix, vmin=-1, vmax=1, cmap="RdBu_r")
                names = [f"t-{width - 1 - i}" if i < width - 1 else "t" for i in range(width)]
                ax.set_xticks(range(width), names)
                ax.set_yticks(range(width), names)
                for i in range(width):
                    for j in range(width):
                        ax.text(j, i, f"{matrix[i, j]:.2f}", ha="center", va="center", fontsize=7,
                                color="white" if abs(matrix[i, j]) > 0.6 else "black")
                ax.set_title(f"layer {index}, {label}", fontsize=9)
            fig.colorbar(image, ax=axes[row].tolist(), label="cosine similarity", shrink=0.8)
        fig.suptitle(f"{title} (mean over {len(runs)} run(s))", fontsize=10)
        _save(fig, path)

    return draw
