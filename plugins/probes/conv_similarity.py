"""``conv-similarity``: are the convolution's taps alike? At initialisation and after training.

Achilles' Heel §4.2 and appendix E.1.5, figure 12. The depthwise convolution of layer i has a
kernel of shape (channels, width): tap k is the column ``kernel[:, k]``, the vector of weights
every channel gives to the token k steps into the window (torch order: the last tap multiplies
the current token, the first the token width-1 steps back). The paper's f = sum_k c_k o v_k is
symmetric under reversing the window only if the taps c_k are equal; the probe reports the
cosine similarity of every pair of taps (a width x width matrix per layer)

* at initialisation, from the run's ``init.safetensors`` (in ``context.run_dir``) loaded into a
  fresh model,
* at the end, from the weights being probed,
* and across: cos(tap k at init, tap l at the end), how far each tap turned in training.

Headline: the mean |cos| over the off-diagonal pairs, per layer (0: orthogonal taps, 1: taps
that are multiples of one another, as in ``mamba2-allone``). The bias is not a tap and is left out.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

import achilles
from achilles import AchillesError, CheckpointError, Probe, ProbeContext, ProbeOption
from achilles.runs.layout import INIT_WEIGHTS
from achilles.runs.files import load_tensors

from ._common import plt, rounded, save_figure, write_result


def tap_cosine(a: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
    """cos(a[:, k], b[:, l]) for kernels (channels, width) -> (width, width); b defaults to a."""
    b = a if b is None else b
    ta = torch.nn.functional.normalize(a.double().T, dim=1)
    tb = torch.nn.functional.normalize(b.double().T, dim=1)
    return ta @ tb.T


def mean_off_diagonal_abs(matrix: torch.Tensor) -> float:
    width = matrix.shape[0]
    if width < 2:
        return float("nan")
    off = ~torch.eye(width, dtype=torch.bool)
    return matrix.abs()[off].mean().item()


def _has_kernels(model) -> bool:
    # a Transformer has the method but returns [] (only the conv-Transformer has a convolution)
    return callable(getattr(model, "conv_kernels", None)) and len(model.conv_kernels()) > 0


class ConvSimilarityProbe(Probe):
    """Cosine similarity between convolution-kernel taps at init and after training (fig. 12)."""

    name = "conv-similarity"
    options = (
        ProbeOption("init_weights", None, None, f"weights at initialisation: a safetensors path or (in Python) a "
                                                f"state dict (default: the run folder's {INIT_WEIGHTS})"),
    )

    def check(self, model, task) -> None:
        super().check(model, task)
        if not _has_kernels(model):
            raise AchillesError(f"probe {self.name!r} needs a convolution (model.conv_kernels()), which "
                                f"{getattr(model, 'arch_name', type(model).__name__)!r} does not have")

    def initial_kernels(self, model, run_dir, init_weights) -> tuple[list[torch.Tensor] | None, str | None]:
        """The kernels at initialisation and where they came from: ``init_weights`` (a path or a
        state dict) or the run's init.safetensors, loaded into a fresh model of the same
        architecture; (None, None) if neither is there."""
        if init_weights is None and run_dir is not None and (Path(run_dir) / INIT_WEIGHTS).is_file():
            init_weights = Path(run_dir) / INIT_WEIGHTS
        if init_weights is None:
            return None, None
        source = "state dict" if isinstance(init_weights, dict) else str(init_weights)
        if run_dir is not None and source == str(Path(run_dir) / INIT_WEIGHTS):
            source = INIT_WEIGHTS  # the run's own file: no machine-specific path in a published result
        if not isinstance(init_weights, dict):  # a file from the run folder is data: its header is checked first
            from achilles.models.loading import check_weights_fit, read_weights_header

            check_weights_fit(model, read_weights_header(Path(init_weights)), arch=model.arch_name,
                              what=f"{source} (the initial weights)")
        state = init_weights if isinstance(init_weights, dict) else load_tensors(init_weights)
        fresh = achilles.create_model(model.arch_name, **model.config)
        missing, unexpected = fresh.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise CheckpointError(f"initial weights do not fit {model.arch_name!r}: missing "
                                  f"{sorted(missing)[:3]}, unexpected {sorted(unexpected)[:3]}")
        return [k.detach().cpu() for k in fresh.conv_kernels()], source

    def run(self, model, task, context: ProbeContext, **options: Any) -> dict[str, Any]:
        """The initial kernels come from ``init_weights`` if given, else from the run folder
        ``context.run_dir`` (``achilles probe`` sets it), else they are left out."""
        opts = self.resolve_options(options)
        final = [k.detach().cpu() for k in model.conv_kernels()]
        init, init_source = self.initial_kernels(model, context.run_dir, opts["init_weights"])
        layers = []
        for i, kernel in enumerate(final):
            entry = {"layer": i, "channels": kernel.shape[0], "width": kernel.shape[1],
                     "final": rounded(tap_cosine(kernel)),
                     "final_mean_abs_off_diagonal": mean_off_diagonal_abs(tap_cosine(kernel))}
            if init is not None:
                entry.update(init=rounded(tap_cosine(init[i])),
                             init_mean_abs_off_diagonal=mean_off_diagonal_abs(tap_cosine(init[i])),
                             init_vs_final=rounded(tap_cosine(init[i], kernel)))
            layers.append(entry)

        headline = {}
        for e in layers:
            if init is not None:
                headline[f"layer {e['layer']}: mean |cos| between taps at init"] = e["init_mean_abs_off_diagonal"]
            headline[f"layer {e['layer']}: mean |cos| between taps at end"] = e["final_mean_abs_off_diagonal"]
        result = {
            "probe": self.name,
            "arch": getattr(model, "arch_name", type(model).__name__),
            "task": task.name,
            "what": ("cosine similarity between the taps (columns, torch order: last = current token) "
                     "of each layer's depthwise convolution kernel (channels, width)"),
            "init_weights": init_source,
            "layers": layers,
            "headline": headline,
            "table": {"headers": ["layer", "mean |cos| at init", "mean |cos| at end"],
                      "rows": [[e["layer"], e.get("init_mean_abs_off_diagonal"), e["final_mean_abs_off_diagonal"]]
                               for e in layers]},
        }
        if init is None:
            result["note"] = (f"no initial weights ({INIT_WEIGHTS} not in the run folder): "
                              "only the trained kernels are shown")
        result["figures"] = [Path(self._figure(result, context.out_dir)).name]
        return write_result(context.out_dir, self.name, result)

    def _figure(self, result: dict, out_dir: Path) -> str:
        layers = result["layers"]
        panels = [("init", "at initialisation"), ("final", "after training"),
                  ("init_vs_final", "init tap (row) vs trained tap (column)")]
        panels = [p for p in panels if p[0] in layers[0]]
        fig, axes = plt.subplots(len(layers), len(panels), squeeze=False, layout="constrained",
                                 figsize=(3.0 * len(panels) + 1.6, 2.9 * len(layers) + 0.5))
        image = None
        for row, entry in enumerate(layers):
            width = entry["width"]
            ticks = [f"t-{width - 1 - k}" if k < width - 1 else "t" for k in range(width)]
            for col, (key, label) in enumerate(panels):
                ax = axes[row][col]
                matrix = torch.tensor(entry[key])
                image = ax.imshow(matrix.numpy(), vmin=-1, vmax=1, cmap="RdBu_r")
                for a in range(width):
                    for b in range(width):
                        value = matrix[a, b].item()
                        ax.text(b, a, f"{value:.2f}", ha="center", va="center", fontsize=7,
                                color="white" if abs(value) > 0.6 else "black")
                ax.set_xticks(range(width), ticks, fontsize=7)
                ax.set_yticks(range(width), ticks, fontsize=7)
                off = entry.get(f"{key}_mean_abs_off_diagonal")
                ax.set_title(f"layer {entry['layer']}: {label}" + (f"\nmean |cos| off-diag {off:.2f}" if off is not None
                                                                   else ""), fontsize=8)
        fig.colorbar(image, ax=[ax for row in axes for ax in row], shrink=0.8, label="cosine similarity")
        fig.suptitle(f"Convolution-kernel taps: cosine similarity ({result['arch']}, {result['task']})", fontsize=9)
        return save_figure(fig, out_dir / f"{self.name}.png")


#: the probes this module registers (every module of this package that defines ``PROBES`` is registered)
PROBES = {"conv-similarity": (ConvSimilarityProbe, "cosine similarity of conv-kernel taps, init vs trained (fig. 12)")}
