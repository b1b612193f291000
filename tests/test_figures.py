"""Figures a reader trusts: titles that do not overlap, axes that say what they show."""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib.figure
import pytest
import torch

import achilles
from achilles.probe import ProbeContext

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
