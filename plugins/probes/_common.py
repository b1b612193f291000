"""Plumbing shared by the first-party probes: option checks, batched forward passes with hooks,
anchor-pair sequences (tasks with the ``pair_shift`` capability), layer selection, and atomic
file output.

Everything here reads or edits a model only through ``model.hooks`` and its public
methods (``unembed_residual``, ``conv_kernels``): probes never touch private attributes.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import torch

from achilles import AchillesError, ConfigError
from achilles.runs.figures import plt  # pyplot on the headless backend (probes run on servers)
from achilles.runs.files import atomic_write_bytes, atomic_write_json

#: forward passes run in chunks of this many sequences (memory stays small at any n)
CHUNK = 1024

# -- options --------------------------------------------------------------------------------


def as_int(name: str, value: Any, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(name, f"must be an integer >= {minimum}, got {value!r}")
    return value


def as_fraction(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ConfigError(name, f"must be a number between 0 and 1, got {value!r}")
    return float(value)


def as_list(value: Any) -> list:
    """A list from a list, a comma-separated string or a single value."""
    if value is None:
        return []
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    if isinstance(value, (list, tuple)):
        return list(value)
    return [value]


# -- layers ---------------------------------------------------------------------------------


def layers_with(model, suffix: str) -> list[int]:
    """Indices ``i`` of the sites ``layers.{i}.{suffix}``, in order."""
    pattern = re.compile(r"^layers\.(\d+)\." + re.escape(suffix) + "$")
    found = [int(m.group(1)) for s in model.hook_points(f"layers.*.{suffix}") if (m := pattern.match(s))]
    return sorted(set(found))


def select_layers(model, suffix: str, requested: Any) -> list[int]:
    """The layers a probe acts on: ``"all"``/None for every layer with the site, else a list
    (or comma-separated string) of indices, each checked against the model."""
    available = layers_with(model, suffix)
    if requested is None or requested == "all":
        return available
    chosen = []
    for item in as_list(requested):
        try:
            index = int(item)
        except (TypeError, ValueError):
            raise ConfigError("layers", f"expected layer indices or 'all', got {item!r}") from None
        if index < 0:
            index += len(available)
        if index not in available:
            raise ConfigError("layers", f"layer {item} has no site '{suffix}' "
                                        f"(layers: {', '.join(map(str, available)) or 'none'})")
        if index not in chosen:
            chosen.append(index)
    return sorted(chosen)


#: per-layer token-mixing matrices, (N, heads, S, S) with entry (t, s) = how much t reads s:
#: the SSM matrix of Mamba-style models, the post-softmax attention of Transformers
MIXING_SITES = ("ssm.matrix", "attn.scores")


def mixing_site(model) -> str | None:
    """The token-mixing site this model exposes (``ssm.matrix`` preferred), if any."""
    for suffix in MIXING_SITES:
        if layers_with(model, suffix):
            return suffix
    return None


def require_mixing_site(probe: str, model) -> None:
    if mixing_site(model) is None:
        raise AchillesError(f"probe {probe!r} needs hook points layers.*.ssm.matrix or layers.*.attn.scores, "
                            f"which {getattr(model, 'arch_name', type(model).__name__)!r} does not expose")


# -- forward passes -------------------------------------------------------------------------


def model_device(model) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


@torch.no_grad()
def run_chunks(model, tokens: torch.Tensor, read: Iterable[str] = (),
               edit_for: Callable[[slice], dict[str, Callable]] | None = None,
               chunk: int = CHUNK) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Logits (N, S, V) of ``tokens`` and the cached ``read`` sites, in chunks of ``chunk``.

    ``edit_for(rows)`` returns the ``edit`` dict for the rows ``rows`` of ``tokens``, so
    an edit may depend on per-sample data (positions, a twin's activations)."""
    read = list(read)
    device = model_device(model)
    was_training = model.training
    model.eval()
    logits, caches = [], {}
    try:
        for start in range(0, len(tokens), chunk):
            rows = slice(start, min(start + chunk, len(tokens)))
            edit = edit_for(rows) if edit_for is not None else None
            with model.hooks(read=read, edit=edit) as cache:
                logits.append(model(tokens[rows].to(device)).float().cpu())
            for site, value in cache.items():
                caches.setdefault(site, []).append(value.cpu())
    finally:
        model.train(was_training)
    return torch.cat(logits), {site: torch.cat(values) for site, values in caches.items()}


def last_argmax(logits: torch.Tensor) -> torch.Tensor:
    """The prediction at the last position (where `composite` puts its target)."""
    return logits[:, -1].argmax(-1)


# -- anchor pairs and positions (the pair_shift capability) ---------------------------------

#: The task capability the anchor-pair probes require. A task that declares it promises:
#: ``task.pair_shift`` maps each ordered anchor pair (a, b) to the shift its label adds to the
#: key; anchor k is token k; every sample holds one key followed directly by its two anchors;
#: ``batch.meta["key_pos"]`` is the key's 1-based position; the label sits at the last position.
PAIR_SHIFT = "pair_shift"


def has_anchor_pairs(task) -> bool:
    return PAIR_SHIFT in getattr(task, "capabilities", ())


def task_pairs(task) -> list[str]:
    """The task's anchor pairs as strings, sorted ("11", "12", ..., "44" on `composite`), from
    its public label table ``pair_shift``: ordered pair (a, b) -> shift added to the key."""
    return sorted(pair_str(p) for p in task.pair_shift)


def pair_str(pair: Any) -> str:
    if isinstance(pair, (tuple, list)):
        return "".join(str(int(p)) for p in pair)
    return str(int(pair)) if not isinstance(pair, str) else pair


def parse_pairs(task, requested: Any, default: list[str], setting: str = "pair") -> list[str]:
    """Anchor pairs from the option ``setting`` (one pair, a list, or a comma-separated string)."""
    known = task_pairs(task)
    if requested is None or requested == "all":
        return default
    out = []
    for item in as_list(requested):
        pair = pair_str(item)
        if pair not in known:
            raise ConfigError(setting, f"{pair!r} is not an anchor pair of {task.name!r} "
                                      f"(pairs: {' '.join(known)})")
        if pair not in out:
            out.append(pair)
    return out


def anchor_tokens(pair: str) -> tuple[int, int]:
    """The token ids of the two anchors of ``pair``: anchor k is token k on the composite tasks."""
    return int(pair[0]), int(pair[1])


def key_positions(batch) -> torch.Tensor:
    """0-based index of each sample's key (the anchors follow at +1 and +2). The task's meta
    ``key_pos`` counts from 1 (the pair_shift contract; docs/tasks.md, `composite`)."""
    if "key_pos" not in batch.meta:
        raise ConfigError("task", "the batch has no key position in its metadata (meta 'key_pos')")
    return batch.meta["key_pos"].long() - 1


@dataclass
class PairSet:
    """``n`` sequences whose anchor pair is ``pair``: ``tokens`` (n, S), ``key_pos`` (n,; 0-based)
    and ``labels`` (n,): the task's answer for this pair (None for a twin, whose answer is not needed)."""

    pair: str
    tokens: torch.Tensor
    key_pos: torch.Tensor
    labels: torch.Tensor | None = None

    def with_pair(self, pair: str) -> "PairSet":
        """The twin set: the same sequences (same key, position, filler) with another anchor pair."""
        return PairSet(pair, set_anchor_pair(self.tokens, self.key_pos, pair), self.key_pos)


def set_anchor_pair(tokens: torch.Tensor, key_pos: torch.Tensor, pair: str) -> torch.Tensor:
    """A copy of ``tokens`` whose two anchors (at key_pos + 1, key_pos + 2) spell ``pair``."""
    first, second = anchor_tokens(pair)
    out = tokens.clone()
    rows = torch.arange(len(tokens))
    out[rows, key_pos + 1] = first
    out[rows, key_pos + 2] = second
    return out


def pair_sets(task, pairs: list[str], n: int, split: str, seed: int) -> dict[str, PairSet]:
    """``n`` random sequences of ``split`` per anchor pair: each pair draws its own sequences
    (seed + pair index), then its anchors are written in. Choice: writing the pair in rather
    than filtering by pair gives exactly ``n`` per pair, including pairs a split lacks
    (`43` in train) or holds rarely; keys, filler and key positions keep the split's rules.
    Labels come from the task's public table ``pair_shift`` (label = key + shift)."""
    if split not in task.splits:
        raise ConfigError("split", f"{split!r} is not a split of {task.name!r} ({', '.join(task.splits)})")
    known = task_pairs(task)
    out = {}
    for pair in pairs:
        batch = task.generate(split, n, seed=seed + known.index(pair))
        key_pos = key_positions(batch)
        tokens = set_anchor_pair(batch.tokens, key_pos, pair)
        labels = tokens[torch.arange(n), key_pos] + task.pair_shift[anchor_tokens(pair)]
        out[pair] = PairSet(pair, tokens, key_pos, labels)
    return out


class PositionTally:
    """Hits counted by the key's position (1-based, as the task states it), over all pairs:
    where the anchors sit decides which tokens lie downstream of them."""

    def __init__(self) -> None:
        self.hits: dict[int, list[int]] = {}

    def add(self, key_pos: torch.Tensor, hit: torch.Tensor) -> None:
        for p in key_pos.unique().tolist():
            rows = key_pos == p
            tally = self.hits.setdefault(int(p) + 1, [0, 0])
            tally[0] += int(hit[rows].sum())
            tally[1] += int(rows.sum())

    def fractions(self) -> dict[str, dict[str, float]]:
        return {str(p): {"fraction": h / n, "n": n} for p, (h, n) in sorted(self.hits.items())}


# -- output ---------------------------------------------------------------------------------


def save_figure(fig, path: Path, dpi: int = 110) -> str:
    """Write a matplotlib figure atomically as PNG and close it."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())
    return str(path)


def write_result(out_dir: Path, name: str, result: dict[str, Any]) -> dict[str, Any]:
    """Write ``<name>.json`` into ``out_dir`` and return ``result``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out_dir / f"{name}.json", result)
    return result


def pair_bar_figure(path: Path, per_pair: dict[str, dict], key: str, title: str, ylabel: str,
                    mean: float, baseline: dict[str, float] | None = None,
                    baseline_label: str = "") -> str:
    """Figure-6 style bars: one bar per anchor pair, values in [0, 1]."""
    pairs = list(per_pair)
    values = [per_pair[p][key] for p in pairs]
    fig, ax = plt.subplots(figsize=(max(5.5, 0.42 * len(pairs) + 1.5), 3.6), layout="constrained")
    bars = ax.bar(range(len(pairs)), values, color="#4c72b0", label=ylabel)
    for bar, value in zip(bars, values):
        ax.text(bar.get_x() + bar.get_width() / 2, min(value, 0.97) + 0.015, f"{value:.2f}",
                ha="center", va="bottom", fontsize=6.5)
    if baseline:
        ax.scatter(range(len(pairs)), [baseline[p] for p in pairs], marker="_", s=160, color="#dd8452",
                   zorder=3, label=baseline_label)
    ax.axhline(mean, color="grey", lw=0.8, ls="--", label=f"mean {mean:.3f}")
    ax.set_xticks(range(len(pairs)), pairs)
    ax.set_xlabel("anchor pair")
    ax.set_ylabel("fraction of sequences")
    ax.set_ylim(0, 1.1)
    n = next(iter(per_pair.values()))["n"]
    ax.set_title(f"{title}\n{n} sequences per pair", fontsize=9)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=3, frameon=False)
    return save_figure(fig, path)


def rounded(x: torch.Tensor, digits: int = 5) -> list:
    """A tensor as nested lists of rounded floats (compact JSON)."""
    return torch.round(x.float() * 10 ** digits).div(10 ** digits).tolist()
