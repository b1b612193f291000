"""Figures a reader trusts: titles that do not overlap, axes that say what they show."""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib.figure
import pytest
import torch

import achilles
from achilles.contract.probe import ProbeContext

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture
def captured(monkeypatch):
    """Every figure saved during the test, kept open for inspection."""
    figures = []
    real = matplotlib.figure.Figure.savefig

    def keep(self, *args, **kwargs):
        figures.append(self)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", keep)
    return figures


def test_information_flow_title_clears_the_panel_titles(tmp_path, captured):
    task = achilles.get_task("composite")
    torch.manual_seed(0)
    model = achilles.create_model("mamba2", vocab_size=task.vocab_size, max_len=task.seq_len, n_layers=2, d_model=16,
                                  d_state=16)
    achilles.get_probe("information-flow").run(model, task, ProbeContext(tmp_path), samples=3, pair="34",
                                              summary_samples=16)
    (fig,) = captured
    renderer = fig.canvas.get_renderer() if hasattr(fig.canvas, "get_renderer") else fig._get_renderer()
    fig.draw(renderer)
    top = fig._suptitle.get_window_extent(renderer).y0
    for ax in fig.axes:
        if ax.get_title():
            assert ax.title.get_window_extent(renderer).y1 <= top + 0.5


def test_a_one_axis_phase_diagram_has_no_none_row(tmp_path, captured):
    from achilles.sweep import make_spec
    from achilles.sweep.phase import draw_phase

    spec = make_spec("mamba2", "composite", {"gamma": [0.5, 1.0]}, 1, "quick", "cpu")
    rows = [{"gamma": g, "seed": 0, "status": "finished", "test.acc_43_composite": 0.5} for g in (0.5, 1.0)]
    draw_phase(spec, rows, ["test.acc_43_composite"], tmp_path)
    assert captured
    for fig in captured:
        for ax in fig.axes:
            assert "None" not in [t.get_text() for t in ax.get_yticklabels()]


def _curves_run(path, status="finished", epochs=3, planned=3, task="inverse"):
    from achilles.runs.folder import RunFolder

    run = RunFolder(path)
    run.write_config({"arch": "mamba2", "task": task, "model": {"n_layers": 2}, "seed": 0, "status": status,
                      "training": {"profile": "quick", "epochs": planned},
                      "headline": {"split": "test", "metric": "acc", "value": 0.5}})
    for epoch in range(1, epochs + 1):
        run.append_metrics({"epoch": epoch, "loss": 2.0 / epoch, "lr": 1e-3, "metrics": {
            split: {"acc": 0.1 * epoch + i * 0.05, "loss": 2.5 / epoch + i} for i, split in enumerate(("train", "test", "ood"))}})
    return run


def _lines(ax):
    return {line.get_label(): line for line in ax.get_lines() if not line.get_label().startswith("_")}


def test_training_curves_one_colour_per_split_one_train_loss_chance_drawn(tmp_path):
    from matplotlib.colors import to_hex

    from achilles.runs.figures import training_curves_figure

    fig = training_curves_figure(_curves_run(tmp_path / "run"))
    ax_loss, ax_acc = fig.axes[0], fig.axes[1]
    loss, acc = _lines(ax_loss), _lines(ax_acc)
    assert [label for label in loss if "train" in label] == ["train loss (running mean)"]
    legend = [t.get_text() for t in ax_loss.get_legend().get_texts()]
    assert sum("train" in t for t in legend) == 1  # one train-loss entry
    assert to_hex(loss["train loss (running mean)"].get_color()) == to_hex(acc["train"].get_color())
    for split in ("test", "ood"):
        assert to_hex(loss[f"{split} loss"].get_color()) == to_hex(acc[split].get_color())  # same colour in each panel
    assert len({to_hex(acc[s].get_color()) for s in ("train", "test", "ood")}) == 3
    assert ax_acc.get_ylim() == (-0.02, 1.02)  # a rate, on [0, 1]
    assert list(acc["chance (0.2)"].get_ydata()) == [0.2, 0.2]  # inverse declares its chance (one in five)
    assert not any("stopped" in t.get_text() for t in ax_acc.texts)


def test_training_curves_of_a_stopped_run_say_why(tmp_path):
    from achilles.runs.figures import training_curves_figure

    fig = training_curves_figure(_curves_run(tmp_path / "run", status="interrupted", epochs=2, planned=5,
                                             task="composite"))
    ax_acc = fig.axes[1]
    assert [t.get_text() for t in ax_acc.texts] == ["stopped: interrupted after epoch 2 of 5"]
    assert ax_acc.get_xlim()[1] == 5.5  # the planned epochs stay on the axis: the gap shows
    assert not any(label.startswith("chance") for label in _lines(ax_acc))  # composite declares no chance


def test_phase_panels_say_what_they_plot_in_words(tmp_path, captured):
    from achilles.sweep import make_spec
    from achilles.sweep.phase import draw_phase, metric_words

    assert metric_words("test.acc") == "test accuracy"
    assert metric_words("ood.acc_index_2") == "ood accuracy when the answer is candidate 2"
    spec = make_spec("mamba2", "composite", {"gamma": [0.5, 1.0], "n_layers": [2, 3]}, 1, "quick", "cpu")
    rows = [{"gamma": g, "n_layers": n, "seed": 0, "status": "finished", "test.acc_43_composite": 0.5,
             "test.acc_43_symmetric": 0.1} for g in (0.5, 1.0) for n in (2, 3)]
    draw_phase(spec, rows, ["test.acc_43_composite", "test.acc_43_symmetric"], tmp_path)
    titles = [" ".join(ax.get_title().split()) for fig in captured for ax in fig.axes if ax.get_title()]
    assert ("Test accuracy on the held-out pair 43, scored against the composite answer (final "
            "test.acc_43_composite, mean over seeds)") in titles
    assert any(t.startswith("Test accuracy on the held-out pair 43, scored against the symmetric answer") for t in titles)
