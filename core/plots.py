"""Figures of a run: training curves."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")  # headless: runs train on servers without a display
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MultipleLocator  # noqa: E402

from .runs import RunFolder, claim  # noqa: E402

CURVES_PNG = "training_curves.png"


def _has_data(values: list[float]) -> bool:
    return any(v is not None and not math.isnan(v) for v in values)


def plot_training_curves(run: RunFolder, headline_metric: str | None = None) -> str:
    """Write ``training_curves.png`` of a run; return its path."""
    fig = training_curves_figure(run, headline_metric)
    path = run.path / CURVES_PNG
    tmp = run.path / f".{CURVES_PNG}.tmp.png"
    claim(run.path, CURVES_PNG)  # the run's own figure: --overwrite removes it, never a user's *.png
    tmp.unlink(missing_ok=True)  # a leftover (or a link planted there) is replaced, never written through
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
    return str(path)


def training_curves_figure(run: RunFolder, headline_metric: str | None = None):
    """Loss (with the learning rate) and the headline metric on every split, per epoch.

    Markers on every point, so a one-epoch run still shows; integer epoch ticks; a split whose
    metric is undefined (e.g. the held-out pair on the training split) is left out of the plot
    and its legend."""
    records = run.read_metrics()
    config = run.read_config()
    metric = headline_metric or (config.get("headline") or {}).get("metric") or "acc"
    epochs = [r["epoch"] for r in records]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.8))
    nan = float("nan")
    ax_loss.plot(epochs, [r["loss"] for r in records], marker="o", ms=3, label="train loss (running mean)")
    splits = list(records[-1]["metrics"]) if records else []
    for split in splits:
        losses = [r["metrics"].get(split, {}).get("loss", nan) for r in records]
        if _has_data(losses):
            ax_loss.plot(epochs, losses, "--", marker="o", ms=3, label=f"{split} loss")
        values = [r["metrics"].get(split, {}).get(metric, nan) for r in records]
        if _has_data(values):
            ax_acc.plot(epochs, values, marker="o", ms=3, label=split)
    ax_loss.set_yscale("log")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("cross-entropy loss")
    ax_loss.set_title("loss")
    ax_lr = ax_loss.twinx()
    ax_lr.plot(epochs, [r["lr"] for r in records], color="grey", alpha=0.5, lw=1, marker=".", label="learning rate")
    ax_lr.set_ylabel("learning rate (end of epoch)", color="grey")
    handles = ax_loss.get_legend_handles_labels()
    lr_handles = ax_lr.get_legend_handles_labels()
    ax_loss.legend(handles[0] + lr_handles[0], handles[1] + lr_handles[1], fontsize=8)
    ax_acc.set_ylim(-0.02, 1.02)
    ax_acc.set_xlabel("epoch")
    ax_acc.set_ylabel(metric)
    ax_acc.set_title(metric)
    if ax_acc.lines:
        ax_acc.legend(fontsize=8)
    step = max(1, math.ceil((max(epochs) - min(epochs) + 1) / 10)) if epochs else 1
    for ax in (ax_loss, ax_acc):
        ax.xaxis.set_major_locator(MultipleLocator(step))  # whole epochs only
        if epochs:
            ax.set_xlim(min(epochs) - 0.5, max(epochs) + 0.5)
    profile = config.get("training", {}).get("profile", "?")
    fig.suptitle(f"{config['arch']} on {config['task']} (profile {profile}, seed {config.get('seed')})", fontsize=10)
    fig.tight_layout()
    return fig
