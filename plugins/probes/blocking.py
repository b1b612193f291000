"""``blocking``: cut the SSM's paths from the key and anchors and see if the output changes.

Achilles' Heel §4.1, figure 6a. For every anchor pair, ``samples`` random sequences (480 as
in the paper) are run twice: as they are, and with the SSM matrix S (``layers.{i}.ssm.matrix``)
edited so that no later token reads the key or either anchor through the SSM::

    S[n, h, t, s] = 0   for s in {p, p+1, p+2} (key, anchor 1, anchor 2) and every t > s,

in every selected layer (default: all) and every head, where p is the key's position. The
diagonal (a token reading itself) and the D skip are kept: they carry no information between
tokens. Choice: "every later token" includes the anchors themselves (key -> anchor 1 -> anchor 2),
so no token downstream of the key can receive key or anchor information through S at all;
``targets=downstream`` restricts the cut to rows t > p+2 (the tokens after the anchor pair).
The result per pair is the fraction of sequences whose argmax at the last position is the
same as without the cut. A value near 1 means the SSM does not carry the task's information
(the paper finds this for standard Mamba: the convolution carries it).
Control (``control=true``, the default): the same cut from as many randomly drawn filler
columns per sequence; if that leaves the output alone while the key/anchor cut does not, the
change is about the key and anchors' information, not about removing any part of S.

On a Transformer the same entries of the post-softmax attention (``layers.{i}.attn.scores``)
are zeroed (rows are not renormalised, as S is not): the contrast case, where attention is the
only way information moves between tokens.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from achilles import ConfigError, Probe, ProbeContext, ProbeOption

from ._common import (PAIR_SHIFT, PositionTally, as_int, as_list, last_argmax, mixing_site, pair_bar_figure,
                      pair_sets, parse_pairs, require_mixing_site, run_chunks, select_layers, task_pairs,
                      write_result)

SOURCE_OFFSETS = {"key": 0, "anchor1": 1, "anchor2": 2}
TARGET_RULES = ("later", "downstream")


def block_mask(key_pos: torch.Tensor, length: int, sources=("key", "anchor1", "anchor2"),
               targets: str = "later") -> torch.Tensor:
    """Bool (N, S, S): True at the entries (t, s) that the cut sets to zero; ``key_pos`` 0-based."""
    n = len(key_pos)
    source = torch.zeros(n, length, dtype=torch.bool)
    for name in sources:
        source[torch.arange(n), key_pos + SOURCE_OFFSETS[name]] = True
    return cut_columns(source, key_pos, targets)


def filler_mask(key_pos: torch.Tensor, length: int, count: int, targets: str = "later",
                seed: int = 0) -> torch.Tensor:
    """The control cut: like ``block_mask`` but from ``count`` filler columns per sequence (drawn at
    random, never the key or an anchor), so a model that is merely fragile to losing some of S
    shows it here too."""
    n = len(key_pos)
    draw = torch.rand(n, length, generator=torch.Generator().manual_seed(seed))
    for offset in range(3):
        draw[torch.arange(n), key_pos + offset] = 2.0  # never among the `count` smallest
    source = torch.zeros(n, length, dtype=torch.bool)
    source.scatter_(1, draw.topk(count, dim=1, largest=False).indices, True)
    return cut_columns(source, key_pos, targets)


def cut_columns(source: torch.Tensor, key_pos: torch.Tensor, targets: str) -> torch.Tensor:
    """(N, S, S): the columns marked in ``source`` (N, S), in every later row t > s (with
    ``targets="downstream"`` only the rows after the anchor pair, t > p+2)."""
    n, length = source.shape
    t = torch.arange(length).view(1, length, 1)
    s = torch.arange(length).view(1, 1, length)
    reached = t > s
    if targets == "downstream":
        reached = reached & (t > (key_pos + 2).view(n, 1, 1))
    return source.unsqueeze(1) & reached


def blocked_run(model, tokens: torch.Tensor, mask: torch.Tensor, sites: list[str], read=()):
    """Logits and ``read`` caches of ``tokens`` with the mixing matrices at ``sites`` zeroed where
    ``mask`` (N, S, S) is True, in every head."""
    def edit_for(rows):
        cut = lambda value, site: value.masked_fill(mask[rows].to(value.device).unsqueeze(1), 0)
        return {site: cut for site in sites}
    return run_chunks(model, tokens, read=read, edit_for=edit_for)


class BlockingProbe(Probe):
    """Zero S from key and anchors to later tokens; share of outputs unchanged per pair (fig. 6a)."""

    name = "blocking"
    requires = (PAIR_SHIFT,)
    options = (
        ProbeOption("samples", int, 480, "sequences per anchor pair (the paper's 480)"),
        ProbeOption("pair", None, None, "anchor pair(s) to probe, e.g. 34 or 12,34 (default: all)"),
        ProbeOption("split", str, "test", "split the sequences are drawn from"),
        ProbeOption("seed", int, 0, "seed of the drawn sequences"),
        ProbeOption("layers", None, "all", "layer indices to cut in, e.g. 0 or [0,1] (default: all)"),
        ProbeOption("sources", None, "key,anchor1,anchor2", "columns to cut: any of key, anchor1, anchor2"),
        ProbeOption("targets", str, "later", "rows to cut: later (every t > s) or downstream (t > p+2)"),
        ProbeOption("control", bool, True, "also cut as many random filler columns, for comparison"),
    )

    def check(self, model, task) -> None:
        require_mixing_site(self.name, model)
        super().check(model, task)

    def run(self, model, task, context: ProbeContext, **options: Any) -> dict[str, Any]:
        opts = self.resolve_options(options)
        n = as_int("samples", opts["samples"], minimum=1)
        seed = as_int("seed", opts["seed"])
        pairs = parse_pairs(task, opts["pair"], task_pairs(task))
        suffix = mixing_site(model)
        layers = select_layers(model, suffix, opts["layers"])
        sites = [f"layers.{i}.{suffix}" for i in layers]
        sources = as_list(opts["sources"])
        bad = [s for s in sources if s not in SOURCE_OFFSETS]
        if bad:
            raise ConfigError("sources", f"{bad[0]!r} is not one of {', '.join(SOURCE_OFFSETS)}")
        control = opts["control"]
        if not isinstance(control, bool):
            raise ConfigError("control", f"must be true or false, got {control!r}")
        if opts["targets"] not in TARGET_RULES:
            raise ConfigError("targets", f"must be one of {', '.join(TARGET_RULES)}, got {opts['targets']!r}")

        per_pair, by_position = {}, PositionTally()
        for pair, data in pair_sets(task, pairs, n, opts["split"], seed).items():
            mask = block_mask(data.key_pos, data.tokens.shape[1], sources, opts["targets"])
            plain = last_argmax(run_chunks(model, data.tokens)[0])
            blocked = last_argmax(blocked_run(model, data.tokens, mask, sites)[0])
            same = plain == blocked
            per_pair[pair] = {"same": same.float().mean().item(), "n": n}
            if control and sources:
                fake = filler_mask(data.key_pos, data.tokens.shape[1], len(sources), opts["targets"],
                                   seed=seed + len(per_pair))
                per_pair[pair]["same_filler_control"] = (
                    plain == last_argmax(blocked_run(model, data.tokens, fake, sites)[0])).float().mean().item()
            per_pair[pair].update(acc_unblocked=(plain == data.labels).float().mean().item(),
                                  acc_blocked=(blocked == data.labels).float().mean().item())
            by_position.add(data.key_pos, same)

        values = [v["same"] for v in per_pair.values()]
        mean = sum(values) / len(values)
        rule = "t > s" if opts["targets"] == "later" else "t > s and t > p+2"
        result = {
            "probe": self.name,
            "arch": getattr(model, "arch_name", type(model).__name__),
            "task": task.name,
            "what": (f"fraction of sequences whose last-position argmax is unchanged when {suffix}[t, s] = 0 "
                     f"for s in {{{', '.join(sources)}}} and {rule}, layers {layers}, all heads"),
            "settings": {**opts, "samples": n, "pair": pairs, "layers": layers, "sources": sources,
                         "site": suffix},
            "per_pair": per_pair,
            "mean_same": mean,
            "same_by_key_position": by_position.fractions(),
            "headline": {"same as unblocked, mean over pairs": mean,
                         "same as unblocked, worst pair": min(values)},
            "table": {"headers": ["pair", "same as unblocked", "same, filler cut", "acc unblocked",
                                  "acc blocked", "n"],
                      "rows": [[p, v["same"], v.get("same_filler_control"), v["acc_unblocked"],
                                v["acc_blocked"], v["n"]] for p, v in per_pair.items()]},
        }
        controls = {p: v["same_filler_control"] for p, v in per_pair.items() if "same_filler_control" in v}
        if controls:
            result["mean_same_filler_control"] = sum(controls.values()) / len(controls)
            result["headline"]["same with filler columns cut instead (control), mean"] = result["mean_same_filler_control"]
        figure = pair_bar_figure(
            context.out_dir / f"{self.name}.png", per_pair, "same",
            title=f"Blocking key & anchors in {suffix} ({result['arch']}, layers {layers}, all heads)",
            ylabel="output unchanged: key & anchors cut", mean=mean, baseline=controls or None,
            baseline_label=f"output unchanged: {len(sources)} random filler columns cut (control)")
        result["figures"] = [Path(figure).name]
        return write_result(context.out_dir, self.name, result)


#: the probes this module registers (every module of this package that defines ``PROBES`` is registered)
PROBES = {"blocking": (BlockingProbe, "zero S from key/anchors to later tokens: output unchanged? (fig. 6a)")}
