"""``information-flow``: the token-to-token flow through each layer, with a logit lens.

Achilles' Heel §4.1, figure 5. For a few sequences, every layer's mixing matrix is read: the
SSM matrix S = L o C B^T (``layers.{i}.ssm.matrix``) for Mamba-style models, the post-softmax
attention (``layers.{i}.attn.scores``) for Transformers; entry (t, s) is how much token t reads
token s. The figure draws the tokens as columns of nodes, one row per layer boundary (inputs at
the bottom), and a line from token s below to token t above with width proportional to the
head-averaged |S[t, s]|, normalised by the largest entry of that layer (lines under
``threshold`` of it are left out). Under each node is the layer's logit-lens readout: that
layer's residual stream ``resid.{i}`` through the model's final norm and unembedding
(``model.unembed_residual``), argmax, decoded with ``task.token_str``.

On a task with anchor pairs (capability ``pair_shift``: `composite`, `composite-symmetric`) the key
is drawn green and the anchors orange, ``pair`` picks the anchor pair written into the drawn
sequences, and the JSON adds a summary over ``summary_samples`` sequences: per layer, the share of
|S| that the downstream tokens (t > p+2) draw from the key and anchors, next to the share uniform
reading would give. On any other task the probe draws the split's sequences as they are.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from achilles import AchillesError, ConfigError, Probe, ProbeContext, ProbeOption

from ._common import (PAIR_SHIFT, as_fraction, as_int, has_anchor_pairs, key_positions, layers_with, mixing_site,
                      model_device, pair_sets, parse_pairs, plt, require_mixing_site, rounded, run_chunks,
                      save_figure, write_result)

MAX_DRAWN = 16  # sequences in one figure; beyond that it stops being readable
KEY_COLOUR, ANCHOR_COLOUR, OTHER_COLOUR = "#2ca02c", "#ff7f0e", "#4c72b0"


def flow_share(matrix: torch.Tensor, key_pos: torch.Tensor) -> tuple[float, float, int]:
    """For head-averaged |S| (N, S, S): the mean over downstream rows (t > p+2) of the share of
    the row's mass that comes from the key and anchors, the share uniform reading over s <= t
    would give, and the number of rows averaged."""
    n, length, _ = matrix.shape
    t = torch.arange(length).view(1, length)
    source = torch.zeros(n, length, dtype=torch.bool)
    for offset in range(3):
        source[torch.arange(n), key_pos + offset] = True
    downstream = t > (key_pos + 2).view(-1, 1)                                  # (N, S) rows
    mass = matrix.sum(-1)
    from_sources = (matrix * source.unsqueeze(1)).sum(-1)
    share = from_sources / mass.clamp_min(1e-30)
    uniform = 3.0 / (t + 1).expand(n, length).float()
    rows = downstream.sum().item()
    if rows == 0:
        return float("nan"), float("nan"), 0
    return share[downstream].mean().item(), uniform[downstream].mean().item(), rows


class InformationFlowProbe(Probe):
    """Per-layer token-to-token flow (SSM matrix or attention) with a logit-lens readout (fig. 5)."""

    name = "information-flow"
    required_sites = ("resid.*",)
    options = (
        ProbeOption("samples", int, 3, f"sequences drawn in the figure (at most {MAX_DRAWN})"),
        ProbeOption("pair", None, None, "anchor pair written into the drawn sequences, e.g. 43 "
                                        f"(tasks with {PAIR_SHIFT}; default: the split's own pairs)"),
        ProbeOption("split", str, "test", "split the sequences are drawn from"),
        ProbeOption("seed", int, 0, "seed of the drawn sequences"),
        ProbeOption("threshold", float, 0.02, "lines below this fraction of a layer's largest entry are left out"),
        ProbeOption("summary_samples", int, 480,
                    f"sequences behind the key/anchor flow summary (tasks with {PAIR_SHIFT})"),
    )

    def check(self, model, task) -> None:
        super().check(model, task)
        require_mixing_site(self.name, model)
        arch = getattr(model, "arch_name", type(model).__name__)
        if not callable(getattr(model, "unembed_residual", None)):
            raise AchillesError(f"probe {self.name!r} needs model.unembed_residual() for the logit lens, "
                                f"which {arch!r} does not have")

    def run(self, model, task, context: ProbeContext, **options: Any) -> dict[str, Any]:
        opts = self.resolve_options(options)
        n = as_int("samples", opts["samples"], minimum=1)
        seed = as_int("seed", opts["seed"])
        if n > MAX_DRAWN:
            raise ConfigError("samples", f"draws at most {MAX_DRAWN} sequences in one figure, got {n}")
        threshold = as_fraction("threshold", opts["threshold"])
        with_pairs = has_anchor_pairs(task)
        if opts["pair"] is not None and not with_pairs:
            raise ConfigError("pair", f"anchor pairs exist only on tasks with capability {PAIR_SHIFT!r}, "
                                      f"which {task.name!r} does not declare")
        if opts["split"] not in task.splits:
            raise ConfigError("split", f"{opts['split']!r} is not a split of {task.name!r} ({', '.join(task.splits)})")
        suffix = mixing_site(model)
        layers = layers_with(model, suffix)
        resid_sites = [f"resid.{i}" for i in layers if model.hook_points(f"resid.{i}")]

        pair = parse_pairs(task, opts["pair"], [None])[0] if with_pairs else None
        if pair is None:
            batch = task.generate(opts["split"], n, seed=seed)
            tokens, key_pos = batch.tokens, key_positions(batch) if with_pairs else None
            # the label at the last scored position of each sample (if it has one)
            labels = [int(batch.targets[j, batch.mask[j].nonzero().max()]) if batch.mask[j].any() else None
                      for j in range(n)]
        else:  # the split's sequences with this pair written in (see pair_sets)
            data = pair_sets(task, [pair], n, opts["split"], seed)[pair]
            tokens, key_pos = data.tokens, data.key_pos
            labels = data.labels.tolist()
        sites = [f"layers.{i}.{suffix}" for i in layers]
        logits, cache = run_chunks(model, tokens, read=sites + resid_sites)
        with torch.no_grad():
            lens = {site: model.unembed_residual(cache[site].to(model_device(model))).argmax(-1).cpu()
                    for site in resid_sites}

        samples = []
        for j in range(n):
            sample = {
                "tokens": [task.token_str(t) for t in tokens[j].tolist()],
                "prediction": task.token_str(int(logits[j, -1].argmax())),
                "layers": [{"layer": i, "site": site, "matrix": rounded(cache[site][j])}
                           for i, site in zip(layers, sites)],
                "logit_lens": {site: [task.token_str(t) for t in lens[site][j].tolist()] for site in resid_sites},
            }
            if labels[j] is not None:
                sample["target"] = task.token_str(labels[j])
            if with_pairs:
                sample["key_pos"] = int(key_pos[j])
                sample["pair"] = "".join(sample["tokens"][int(key_pos[j]) + 1: int(key_pos[j]) + 3])
            samples.append(sample)

        result = {
            "probe": self.name,
            "arch": getattr(model, "arch_name", type(model).__name__),
            "task": task.name,
            "what": (f"per layer, layers.{{i}}.{suffix} (N, heads, S, S): entry (t, s) = how much token t "
                     "reads token s; logit lens = argmax of unembed_residual(resid.{i})"),
            "settings": {**opts, "samples": n, "site": suffix},
            "samples": samples,
        }
        if with_pairs:
            result["summary"] = self._summary(model, task, opts, sites, layers)
            result["headline"] = {
                f"layer {e['layer']}: share of |S| downstream tokens draw from key+anchors": e["share"]
                for e in result["summary"]["layers"]}
            result["headline"]["(uniform reading would give)"] = result["summary"]["layers"][0]["uniform"]
        result["figures"] = [Path(self._figure(result, layers, threshold, context.out_dir)).name]
        return write_result(context.out_dir, self.name, result)

    def _summary(self, model, task, opts, sites, layers) -> dict[str, Any]:
        count = as_int("summary_samples", opts["summary_samples"], minimum=1)
        seed = as_int("seed", opts["seed"])
        pairs = parse_pairs(task, opts["pair"], [None])
        if pairs == [None]:  # the split's own pairs
            batch = task.generate(opts["split"], count, seed=seed + 1)
            tokens, key_pos = batch.tokens, key_positions(batch)
        else:
            data = pair_sets(task, pairs, count, opts["split"], seed + 1)[pairs[0]]
            tokens, key_pos = data.tokens, data.key_pos
        _, cache = run_chunks(model, tokens, read=sites)
        out = []
        for i, site in zip(layers, sites):
            share, uniform, rows = flow_share(cache[site].abs().mean(1), key_pos)
            out.append({"layer": i, "share": share, "uniform": uniform, "rows": rows})
        return {"sequences": count, "layers": out,
                "what": "mean over downstream rows t > p+2 of sum_{s in key, anchors} |S[t,s]| / sum_s |S[t,s]| "
                        "(heads averaged); uniform = the same share if t read all s <= t equally"}

    def _figure(self, result, layers, threshold, out_dir: Path) -> str:
        samples = result["samples"]
        length = len(samples[0]["tokens"])
        levels = len(layers)
        ncols = min(len(samples), 3 if length <= 12 else 1)
        nrows = -(-len(samples) // ncols)
        # constrained layout keeps the two-line suptitle clear of the panel titles
        fig, axes = plt.subplots(nrows, ncols, squeeze=False, layout="constrained",
                                 figsize=(ncols * (0.5 * length + 0.8), nrows * (1.1 * levels + 1.6) + 0.5))
        for ax in axes.flat[len(samples):]:
            ax.axis("off")
        for ax, sample in zip(axes.flat, samples):
            colours = [OTHER_COLOUR] * length
            if "key_pos" in sample:
                p = sample["key_pos"]
                colours[p] = KEY_COLOUR
                colours[p + 1] = colours[p + 2] = ANCHOR_COLOUR
            for level, entry in enumerate(sample["layers"]):
                flow = torch.tensor(entry["matrix"]).abs()
                flow = flow.mean(0) if flow.dim() == 3 else flow        # average the heads
                scale = flow.max().clamp_min(1e-30)
                for t in range(length):
                    for s in range(t + 1):
                        w = (flow[t, s] / scale).item()
                        if w < threshold:
                            continue
                        ax.plot([s, t], [level, level + 1], color=colours[s], lw=0.3 + 3.7 * w,
                                alpha=0.25 + 0.6 * w, solid_capstyle="round", zorder=1)
            for t, token in enumerate(sample["tokens"]):
                ax.text(t, -0.18, token, ha="center", va="top", fontsize=8, fontweight="bold", color=colours[t])
            for level, i in enumerate(layers, start=1):
                for t, readout in enumerate(sample["logit_lens"].get(f"resid.{i}", ())):
                    ax.text(t, level - 0.1, readout, ha="center", va="top", fontsize=6.5, color="#333333",
                            bbox=dict(boxstyle="round,pad=0.15", fc="white", ec="#bbbbbb", lw=0.5), zorder=3)
            ax.scatter([t for t in range(length) for _ in range(levels + 1)],
                       [lv for _ in range(length) for lv in range(levels + 1)], s=10, color="#555555", zorder=2)
            ax.set_yticks(range(levels + 1), ["input"] + [f"layer {i}" for i in layers], fontsize=7)
            ax.set_xticks([])
            ax.set_xlim(-0.6, length - 0.4)
            ax.set_ylim(-0.6, levels + 0.35)
            for side in ("top", "right", "bottom"):
                ax.spines[side].set_visible(False)
            title = f"pair {sample['pair']}  " if "pair" in sample else ""
            title += f"prediction {sample['prediction']}"
            title += f" (target {sample['target']})" if "target" in sample else ""
            ax.set_title(title, fontsize=8)
        site = result["settings"]["site"]
        fig.suptitle(f"Information flow through {site} ({result['arch']}, {result['task']}); "
                     "line width ∝ |entry| (per layer)\nboxes: logit-lens argmax of the layer's residual stream"
                     + ("; green: key, orange: anchors" if "key_pos" in samples[0] else ""), fontsize=8)
        return save_figure(fig, out_dir / f"{self.name}.png", dpi=90)


#: the probes this module registers (every module of this package that defines ``PROBES`` is registered)
PROBES = {"information-flow": (InformationFlowProbe,
                               "per-layer token flow (SSM matrix or attention) + logit lens (fig. 5)")}
