"""Figures of a run: training curves."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")  # headless: runs train on servers without a display
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MultipleLocator  # noqa: E402

from achilles.runs.folder import RunFolder
from achilles.runs.ownership import claim

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


#: one colour per split, the same in every panel (train first: its loss curve is the training loss)
SPLIT_COLOURS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink",
                 "tab:olive", "tab:cyan")


def split_colours(splits: list[str]) -> dict[str, str]:
    """``{split: colour}``: train always blue, the others in order."""
    ordered = (["train"] if "train" in splits else []) + [s for s in splits if s != "train"]
    return {split: SPLIT_COLOURS[i % len(SPLIT_COLOURS)] for i, split in enumerate(ordered)}


def declared_chance(task: str, metric: str) -> float | None:
    """The chance level the task declares for ``metric`` (``Task.chance``), or None."""
    from achilles.contract.declarations import task_class

    chance = getattr(task_class(task), "chance", None) or {}
    value = chance.get(metric) if isinstance(chance, dict) else None
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def is_rate(metric: str, values: list[float]) -> bool:
    """A metric read as a rate, plotted on [0, 1]: every value recorded lies in it."""
    finite = [v for v in values if v is not None and not math.isnan(v)]
    return bool(finite) and all(0.0 <= v <= 1.0 for v in finite)


def training_curves_figure(run: RunFolder, headline_metric: str | None = None):
    """Loss (with the learning rate) and the headline metric on every split, per epoch.

    One colour per split in both panels; the training loss (the running mean over the epoch's
    steps) is the one train-loss curve (the train split's evaluated loss, a second measure of the
    same thing, is left out); a rate is plotted on [0, 1] with the chance level the task declares
    (``Task.chance``) drawn; a run that did not finish says where and why it stopped. Markers on
    every point, so a one-epoch run still shows; integer epoch ticks; a split whose metric is
    undefined (e.g. the held-out pair on the training split) is left out of the plot and its legend."""
    records = run.read_metrics()
    config = run.read_config()
    metric = headline_metric or (config.get("headline") or {}).get("metric") or "acc"
    epochs = [r["epoch"] for r in records]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.8))
    nan = float("nan")
    splits = list(records[-1]["metrics"]) if records else []
    colours = split_colours(splits)
    ax_loss.plot(epochs, [r["loss"] for r in records], marker="o", ms=3, color=colours.get("train", SPLIT_COLOURS[0]),
                 label="train loss (running mean)")
    rates: list[float] = []
    for split in splits:
        losses = [r["metrics"].get(split, {}).get("loss", nan) for r in records]
        if split != "train" and _has_data(losses):
            ax_loss.plot(epochs, losses, "--", marker="o", ms=3, color=colours[split], label=f"{split} loss")
        values = [r["metrics"].get(split, {}).get(metric, nan) for r in records]
        if _has_data(values):
            ax_acc.plot(epochs, values, marker="o", ms=3, color=colours[split], label=split)
            rates += values
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
    if is_rate(metric, rates) or not rates:
        ax_acc.set_ylim(-0.02, 1.02)
    chance = declared_chance(str(config.get("task")), metric)
    if chance is not None:
        ax_acc.axhline(chance, color="black", ls=":", lw=1, label=f"chance ({chance:g})")
    ax_acc.set_xlabel("epoch")
    ax_acc.set_ylabel(metric)
    ax_acc.set_title(metric)
    if ax_acc.lines:
        ax_acc.legend(fontsize=8)
    step = max(1, math.ceil((max(epochs) - min(epochs) + 1) / 10)) if epochs else 1
    planned = (config.get("training") or {}).get("epochs")
    status = config.get("status")
    stopped = status not in (None, "finished")  # a record without a status is an old finished one
    for ax in (ax_loss, ax_acc):
        ax.xaxis.set_major_locator(MultipleLocator(step))  # whole epochs only
        if epochs:
            right = max(max(epochs), planned) if isinstance(planned, int) and stopped else max(epochs)
            ax.set_xlim(min(epochs) - 0.5, right + 0.5)
    if epochs and stopped:  # the curves stop early: say where and why
        why = f"stopped: {status}" + (f" after epoch {max(epochs)}" if isinstance(planned, int) else "")
        if isinstance(planned, int):
            why += f" of {planned}"
        for ax in (ax_loss, ax_acc):
            ax.axvline(max(epochs), color="tab:red", ls="-.", lw=1)
        ax_acc.annotate(why, xy=(max(epochs), 0.5), xycoords=("data", "axes fraction"), xytext=(4, 0),
                        textcoords="offset points", fontsize=8, color="tab:red", rotation=90, va="center")
    profile = config.get("training", {}).get("profile", "?")
    fig.suptitle(f"{config['arch']} on {config['task']} (profile {profile}, seed {config.get('seed')})"
                 + (f": {status}" if stopped else ""), fontsize=10)
    fig.tight_layout()
    return fig
