"""``substitution``: give a sequence the post-convolution states of its `43` twin.

Achilles' Heel §4.1, figure 6b. For every anchor pair XY other than the twin pair (``43`` by
default), ``samples`` random sequences are each paired with a twin: the same sequence (same key,
key position and filler) with the anchors rewritten to ``43``. The twin is run and its
post-convolution states ``layers.{i}.conv.out`` (SiLU(conv(xBC)): the x, B and C that enter the
SSM) are read; the original is then run with those states replaced by the twin's

    at the downstream positions t > p+2 (every token after the anchor pair, up to the last),
    in every selected layer (default: all), all channels,

while the key, the anchors and everything before them keep their own states. If the
convolution alone carries the anchors' information to where the answer is read, the edited
original answers as the twin does: the result per pair is the fraction of sequences whose
last-position argmax equals the twin's. Two references are reported beside it: how often the
unedited original already answers like the twin (``already_twin``; the edit's effect is the
gap), and how often the edited output still equals the original's (``kept``).

Control (``control=true``, the default): the same edit with the states of a *random twin* (the
same sequence with the anchors rewritten to a randomly drawn other pair, neither the original's
nor the twin's); ``to_twin_control`` is how often the output then equals the ``43`` twin's. An
edit that merely disrupts the sequence moves the output as often to 43's answer under either
substitution; the finding is the gap ``to_twin - to_twin_control``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from achilles import ConfigError, Probe, ProbeContext, ProbeOption

from ._common import (PAIR_SHIFT, PositionTally, as_int, last_argmax, pair_bar_figure, pair_sets, parse_pairs,
                      run_chunks, select_layers, task_pairs, write_result)

SITE = "conv.out"


def downstream_mask(key_pos: torch.Tensor, length: int) -> torch.Tensor:
    """Bool (N, S): True at the positions after the anchor pair (t > key_pos + 2)."""
    return torch.arange(length).view(1, -1) > (key_pos + 2).view(-1, 1)


def substituted_run(model, tokens: torch.Tensor, key_pos: torch.Tensor, twin_states: dict[str, torch.Tensor],
                    read=()):
    """Logits and ``read`` caches of ``tokens`` with each site of ``twin_states`` (site -> (N, S, C))
    replaced by the twin's value at the downstream positions t > key_pos + 2 (0-based)."""
    keep_own = ~downstream_mask(key_pos, tokens.shape[1])

    def edit_for(rows):
        def substitute(value, site):
            own = keep_own[rows].to(value.device).unsqueeze(-1)
            return torch.where(own, value, twin_states[site][rows].to(value.device, value.dtype))
        return {site: substitute for site in twin_states}
    return run_chunks(model, tokens, read=read, edit_for=edit_for)


class SubstitutionProbe(Probe):
    """Replace downstream post-conv states by a `43` twin's; share collapsing to the twin (fig. 6b)."""

    name = "substitution"
    required_sites = (f"layers.*.{SITE}",)
    requires = (PAIR_SHIFT,)
    options = (
        ProbeOption("samples", int, 480, "sequences per anchor pair (the paper's 480)"),
        ProbeOption("pair", None, None, "anchor pair(s) to probe, e.g. 34 or 12,34 (default: all but the twin)"),
        ProbeOption("twin", str, "43", "the anchor pair whose post-conv states are substituted in"),
        ProbeOption("split", str, "test", "split the sequences are drawn from"),
        ProbeOption("seed", int, 0, "seed of the drawn sequences"),
        ProbeOption("layers", None, "all", "layer indices to substitute in, e.g. 0 or [0,1] (default: all)"),
        ProbeOption("control", bool, True, "also substitute a random other pair's states, for comparison"),
    )

    def run(self, model, task, context: ProbeContext, **options: Any) -> dict[str, Any]:
        opts = self.resolve_options(options)
        n = as_int("samples", opts["samples"], minimum=1)
        seed = as_int("seed", opts["seed"])
        twin_pair = parse_pairs(task, opts["twin"], ["43"], setting="twin")[0]
        pairs = parse_pairs(task, opts["pair"], [p for p in task_pairs(task) if p != twin_pair])
        layers = select_layers(model, SITE, opts["layers"])
        sites = [f"layers.{i}.{SITE}" for i in layers]

        control = opts["control"]
        if not isinstance(control, bool):
            raise ConfigError("control", f"must be true or false, got {control!r}")
        all_pairs = task_pairs(task)
        per_pair, by_position, control_by_position = {}, PositionTally(), PositionTally()
        for index, (pair, data) in enumerate(pair_sets(task, pairs, n, opts["split"], seed).items()):
            twin = data.with_pair(twin_pair)
            twin_logits, twin_states = run_chunks(model, twin.tokens, read=sites)
            plain_logits, _ = run_chunks(model, data.tokens)
            edited_logits, _ = substituted_run(model, data.tokens, data.key_pos, twin_states)
            twin_out, plain_out, edited_out = map(last_argmax, (twin_logits, plain_logits, edited_logits))
            by_position.add(data.key_pos, edited_out == twin_out)
            per_pair[pair] = {"to_twin": (edited_out == twin_out).float().mean().item(),
                              "already_twin": (plain_out == twin_out).float().mean().item(),
                              "kept": (edited_out == plain_out).float().mean().item(),
                              "n": n}
            others = [p for p in all_pairs if p not in (pair, twin_pair)]
            if control and others:
                # a fixed, seed-derived choice of the random pair, so the control is reproducible
                other = others[(seed * 7919 + index) % len(others)]
                _, random_states = run_chunks(model, data.with_pair(other).tokens, read=sites)
                control_logits, _ = substituted_run(model, data.tokens, data.key_pos, random_states)
                control_out = last_argmax(control_logits)
                control_by_position.add(data.key_pos, control_out == twin_out)
                per_pair[pair]["to_twin_control"] = (control_out == twin_out).float().mean().item()
                per_pair[pair]["control_pair"] = other

        values = [v["to_twin"] for v in per_pair.values()]
        mean = sum(values) / len(values)
        controls = {p: v["to_twin_control"] for p, v in per_pair.items() if "to_twin_control" in v}
        result = {
            "probe": self.name,
            "arch": getattr(model, "arch_name", type(model).__name__),
            "task": task.name,
            "what": (f"fraction of sequences whose last-position argmax equals that of their {twin_pair} twin "
                     f"after {', '.join(sites)} at positions t > p+2 are replaced by the twin's"),
            "settings": {**opts, "samples": n, "pair": pairs, "twin": twin_pair, "layers": layers},
            "per_pair": per_pair,
            "mean_to_twin": mean,
            "to_twin_by_key_position": by_position.fractions(),
            "headline": {f"collapse to the {twin_pair} output, mean over pairs": mean,
                         f"collapse to the {twin_pair} output, worst pair": min(values),
                         f"already the {twin_pair} output unedited, mean": (
                             sum(v["already_twin"] for v in per_pair.values()) / len(per_pair))},
            "table": {"headers": ["pair", f"= {twin_pair} output after substitution",
                                  f"= {twin_pair} output unedited", "= own output after", "n"],
                      "rows": [[p, v["to_twin"], v["already_twin"], v["kept"], v["n"]]
                               for p, v in per_pair.items()]},
        }
        if controls:
            result["mean_to_twin_control"] = sum(controls.values()) / len(controls)
            result["to_twin_control_by_key_position"] = control_by_position.fractions()
            result["headline"][f"= {twin_pair} output after a random pair's states (control), mean"] = (
                result["mean_to_twin_control"])
        figure = pair_bar_figure(
            context.out_dir / f"{self.name}.png", per_pair, "to_twin",
            title=(f"Substituting post-conv states (t > p+2, layers {layers}) with the {twin_pair} twin's "
                   f"({result['arch']})"),
            ylabel=f"output = {twin_pair} twin's after substitution", mean=mean,
            baseline={p: v["already_twin"] for p, v in per_pair.items()},
            baseline_label=f"output = {twin_pair} twin's without substitution")
        result["figures"] = [Path(figure).name]
        return write_result(context.out_dir, self.name, result)


#: the probes this module registers (every module of this package that defines ``PROBES`` is registered)
PROBES = {"substitution": (SubstitutionProbe, "downstream post-conv states of a 43 twin: output -> 43's? (fig. 6b)")}
