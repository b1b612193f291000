"""Helpers shared by the first-party tasks: seeding, setting checks, vectorised sampling,
hash-based split assignment and masked accuracies.

Every random draw goes through ``numpy.random.Generator`` (PCG64) seeded from
``(seed, split index)``: the same seed gives the same tensors on any machine.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
import torch

from achilles import Batch, ConfigError, check_int

# -- seeding and settings ------------------------------------------------------------------


def split_rng(seed: int, split_index: int) -> np.random.Generator:
    """The generator of one split: streams of different splits never overlap."""
    return np.random.default_rng([seed, split_index])


def check_bool(name: str, value: Any) -> bool:
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise ConfigError(name, f"must be true or false, got {value!r}")


def check_choices(name: str, value: Any, allowed: Sequence[str] | None = None,
                  parse: Callable[[str], Any] | None = None, form: str = "") -> list[str]:
    """A non-empty list of names, given as a list or a comma-separated string; each must be in
    ``allowed`` (or accepted by ``parse``, which raises ValueError otherwise; ``form`` says what
    it accepts). Duplicates dropped."""
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or not items:
        raise ConfigError(name, f"must be a non-empty list (or comma-separated names), got {value!r}")
    out: list[str] = []
    for item in items:
        item = str(item).strip()
        ok = item in allowed if allowed is not None else True
        if ok and parse is not None:
            try:
                parse(item)
            except ValueError:
                ok = False
        if not ok:
            hint = f" (one of: {', '.join(allowed)})" if allowed is not None else (f" ({form})" if form else "")
            raise ConfigError(name, f"{item!r} is not allowed{hint}")
        if item not in out:
            out.append(item)
    return out


def resolve_n_seed(task, split: str, n: int | None, seed: int) -> tuple[int, int, int]:
    """(split index, n, seed) after checking them against ``task``."""
    if split not in task.splits:
        raise ConfigError("split", f"{split!r} is not a split of {task.name or type(task).__name__} "
                                   f"(splits: {', '.join(task.splits)})")
    n = task.split_sizes()[split] if n is None else check_int("n", n, minimum=1)
    return task.splits.index(split), n, check_int("seed", seed, minimum=0)


# -- vectorised sampling -------------------------------------------------------------------


def balanced(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    """n labels in [0, k), each n // k times plus a random n % k of them once more, in random
    order: exact shares, and a small n still reaches every label with equal chance."""
    labels = np.concatenate([np.tile(np.arange(k), n // k), rng.permutation(k)[:n % k]])
    return rng.permutation(labels)


def distinct_ints(rng: np.random.Generator, high: int, shape: tuple[int, int]) -> np.ndarray:
    """Rows of ``shape[1]`` distinct ints in [0, high), uniform over ordered tuples.

    Draws with replacement, then redraws repeated entries until a row has none; the rule never
    looks at values, so every ordered tuple of distinct values is equally likely."""
    rows, k = shape
    if k > high:
        raise ValueError(f"cannot draw {k} distinct values from {high}")
    out = rng.integers(0, high, shape)
    todo = np.arange(rows)
    while todo.size and k > 1:
        sub = out[todo]
        order = np.argsort(sub, axis=1, kind="stable")
        ranked = np.take_along_axis(sub, order, axis=1)
        repeat = np.zeros_like(sub, dtype=bool)
        np.put_along_axis(repeat, order[:, 1:], ranked[:, 1:] == ranked[:, :-1], axis=1)
        bad_rows, bad_cols = np.nonzero(repeat)
        if bad_rows.size == 0:
            break
        sub[bad_rows, bad_cols] = rng.integers(0, high, bad_rows.size)
        out[todo] = sub
        todo = todo[np.unique(bad_rows)]
    return out


def draw_excluding(rng: np.random.Generator, low: int, high: int, excluded_sorted: np.ndarray,
                   shape: tuple[int, int]) -> np.ndarray:
    """Uniform ints in [low, high] (inclusive) avoiding each row's few ``excluded_sorted`` values
    (ascending, distinct, inside the range): draw from the smaller range, then step over them."""
    values = rng.integers(0, high - low + 1 - excluded_sorted.shape[1], shape)
    for j in range(excluded_sorted.shape[1]):
        values += values >= (excluded_sorted[:, j:j + 1] - low)
    return values + low


def in_rows(values: np.ndarray, members: np.ndarray) -> np.ndarray:
    """Boolean (N, S): ``values[i, j]`` occurs in row ``members[i]`` (one sorted search, all rows)."""
    n = values.shape[0]
    span = int(max(values.max(initial=0), members.max(initial=0))) + 1
    offset = np.arange(n, dtype=np.int64)[:, None] * span
    flat = np.sort(members.astype(np.int64) + offset, axis=1).ravel()
    query = (values.astype(np.int64) + offset).ravel()
    pos = np.minimum(np.searchsorted(flat, query), flat.size - 1)
    return (flat[pos] == query).reshape(values.shape)


def power_law_slots(rng: np.random.Generator, rows: int, n_slots: int, k: int, power_a: float) -> np.ndarray:
    """k distinct slots in [0, n_slots) per row, drawn one after another without replacement
    with p(s) ∝ a·(s+1)^(a-1) (Zoology's MQAR gaps); returned in drawing order.

    Vectorised with Efraimidis-Spirakis keys u^(1/w): sorting them descending reproduces the
    law of successive weighted draws without replacement."""
    weights = power_a * np.arange(1, n_slots + 1, dtype=np.float64) ** (power_a - 1)
    weights /= weights.sum()
    keys = np.log(rng.random((rows, n_slots))) / weights
    return np.argsort(-keys, axis=1, kind="stable")[:, :k]


# -- split assignment for tasks with random content ------------------------------------------

CHUNK_TOKENS = 1 << 21  # rows are built this many tokens at a time
_FNV_OFFSET = np.uint64(0xCBF29CE484222325)
_FNV_PRIME = np.uint64(0x100000001B3)


def row_hash(tokens: np.ndarray) -> np.ndarray:
    """A 64-bit hash of each row (FNV-1a over the tokens, then the splitmix64 finaliser)."""
    h = np.full(tokens.shape[0], _FNV_OFFSET, dtype=np.uint64)
    for column in tokens.T:
        h ^= column.astype(np.uint64)
        h *= _FNV_PRIME
    h ^= h >> np.uint64(30)
    h *= np.uint64(0xBF58476D1CE4E5B9)
    h ^= h >> np.uint64(27)
    h *= np.uint64(0x94D049BB133111EB)
    h ^= h >> np.uint64(31)
    return h


def hash_bucket(tokens: np.ndarray, n_buckets: int) -> np.ndarray:
    return (row_hash(tokens) % np.uint64(n_buckets)).astype(np.int64)


def fill_split(make: Callable[[np.random.Generator, dict[str, np.ndarray]], dict[str, np.ndarray]],
               rng: np.random.Generator, plan: dict[str, np.ndarray], bucket: int, n_buckets: int,
               setting: str, why: str, row_tokens: int, max_rounds: int = 200) -> dict[str, np.ndarray]:
    """Samples whose token-row hash falls in ``bucket``: a sample's split is a function of its
    tokens, so two splits can never share a sample. ``make(rng, plan)`` builds one row per plan
    entry (length, placement, ...); rows that hash elsewhere are redrawn with the same plan, which
    keeps the plan's exact shares. Works in chunks of about 2M tokens (``row_tokens`` per row) to
    keep temporaries small. Raises ConfigError(setting, why) if a row cannot be filled (the
    settings leave too few distinct samples to split)."""
    n = len(next(iter(plan.values())))
    step = max(1, CHUNK_TOKENS // row_tokens)
    parts = []
    for start in range(0, n, step):
        chunk = {k: v[start:start + step] for k, v in plan.items()}
        out = make(rng, chunk)
        todo = np.nonzero(hash_bucket(out["tokens"], n_buckets) != bucket)[0]
        for _ in range(max_rounds):
            if todo.size == 0:
                break
            sub = make(rng, {k: v[todo] for k, v in chunk.items()})
            for key, value in sub.items():
                out[key][todo] = value
            todo = todo[hash_bucket(sub["tokens"], n_buckets) != bucket]
        else:
            raise ConfigError(setting, why)
        parts.append(out)
    return parts[0] if len(parts) == 1 else {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


# -- batches and metrics -------------------------------------------------------------------


def to_batch(tokens: np.ndarray, targets: np.ndarray, mask: np.ndarray, meta: dict[str, np.ndarray]) -> Batch:
    as_long = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.int64))
    return Batch(as_long(tokens), as_long(targets), torch.from_numpy(np.ascontiguousarray(mask, dtype=bool)),
                 {k: as_long(v) for k, v in meta.items()})


def next_token_targets(tokens: np.ndarray, mask: np.ndarray, pad: int) -> np.ndarray:
    """Targets of a left-to-right task: the next token where ``mask`` is set, ``pad`` elsewhere."""
    nxt = np.full_like(tokens, pad)
    nxt[:, :-1] = tokens[:, 1:]
    return np.where(mask, nxt, pad)


def masked_hits(logits: torch.Tensor, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """(correct, row) for every scored position, in row-major order: ``correct`` says whether the
    arg-max of the logits is the target, ``row`` which sample the position belongs to. Works on
    column-restricted batches (achilles.training.evaluation passes only the scored columns)."""
    mask = batch.mask.to(logits.device)
    pred = logits[mask].argmax(-1)
    correct = (pred == batch.targets.to(logits.device)[mask]).cpu()
    row = mask.nonzero()[:, 0].cpu()
    return correct, row


def mean(x: torch.Tensor) -> float:
    return float(x.float().mean()) if x.numel() else float("nan")


def grouped_accuracy(out: dict[str, float], prefix: str, correct: torch.Tensor, groups: torch.Tensor,
                     names: Callable[[int], str]) -> None:
    """Adds ``{prefix}{names(g)}`` = accuracy over the entries of each group value ``g`` present."""
    for g in torch.unique(groups).tolist():
        out[f"{prefix}{names(int(g))}"] = mean(correct[groups == g])


def describe_sequence(task, batch: Batch, i: int, pad: int, extra: str = "") -> str:
    """A left-to-right sample as text: its tokens without trailing padding, then what is scored."""
    tokens = batch.tokens[i].tolist()
    while tokens and tokens[-1] == pad:
        tokens.pop()
    scored = [task.token_str(t) for t, m in zip(batch.targets[i].tolist(), batch.mask[i].tolist()) if m]
    text = " ".join(task.token_str(t) for t in tokens)
    return f"{text}\n      scored next tokens: {' '.join(scored)}" + (f"   [{extra}]" if extra else "")

