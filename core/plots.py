"""Figures of a run: training curves."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # headless: runs train on servers without a display
import matplotlib.pyplot as plt  # noqa: E402

from .runs import RunFolder  # noqa: E402

CURVES_PNG = "training_curves.png"


def plot_training_curves(run: RunFolder, headline_metric: str | None = None) -> str:
    """Loss and learning rate per epoch, and the headline metric on every split."""
    records = run.read_metrics()
    config = run.read_config()
    metric = headline_metric or (config.get("headline") or {}).get("metric") or "acc"
    epochs = [r["epoch"] for r in records]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.8))
    ax_loss.plot(epochs, [r["loss"] for r in records], label="train loss (running)")
    splits = list(records[-1]["metrics"]) if records else []
    for split in splits:
        ax_loss.plot(epochs, [r["metrics"].get(split, {}).get("loss", float("nan")) for r in records],
                     "--", label=f"{split} loss")
        ax_acc.plot(epochs, [r["metrics"].get(split, {}).get(metric, float("nan")) for r in records],
                    marker="o", ms=3, label=split)
    ax_loss.set_yscale("log")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_title("loss")
    ax_loss.legend(fontsize=8)
    ax_lr = ax_loss.twinx()
    ax_lr.plot(epochs, [r["lr"] for r in records], color="grey", alpha=0.4, lw=1)
    ax_lr.set_ylabel("lr", color="grey")
    ax_acc.set_ylim(-0.02, 1.02)
    ax_acc.set_xlabel("epoch")
    ax_acc.set_title(metric)
    ax_acc.legend(fontsize=8)
    profile = config.get("training", {}).get("profile", "?")
    fig.suptitle(f"{config['arch']} on {config['task']} (profile {profile}, seed {config.get('seed')})", fontsize=10)
    fig.tight_layout()
    path = run.path / CURVES_PNG
    tmp = run.path / f".{CURVES_PNG}.tmp.png"
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
    return str(path)
