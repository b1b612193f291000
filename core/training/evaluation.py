"""Evaluate a model on a task's splits, in memory-bounded chunks."""

from __future__ import annotations

import sys
from typing import Callable, Iterable

import torch

from achilles.models.logits_mask import logits_at
from achilles.training.precision import autocast
from achilles.contract.task import Batch, Task


def scored_positions(batch: Batch) -> Batch:
    """The batch with each sample's scored positions moved to the front, in their order: tokens,
    targets and mask become (N, K) for the K positions the busiest sample scores, so metrics never
    need the full (N, S, V) logits. ``mask`` selects the same tokens and targets, in the same
    row-major order, as the original mask did (``composite`` and ``inverse``: just the last one)."""
    counts = batch.mask.sum(1)
    width = int(counts.max()) if len(batch) else 0
    mask = torch.arange(width, device=batch.mask.device) < counts[:, None]
    tokens = batch.tokens.new_zeros(len(batch), width)
    targets = batch.targets.new_zeros(len(batch), width)
    tokens[mask] = batch.tokens[batch.mask]
    targets[mask] = batch.targets[batch.mask]
    return Batch(tokens, targets, mask, batch.meta)


@torch.no_grad()
def predict_logits(model: torch.nn.Module, batch: Batch, chunk_size: int = 1024,
                   precision: str | None = None, on_chunk: Callable[[int], object] | None = None,
                   ) -> tuple[torch.Tensor, Batch]:
    """Logits at the scored positions of ``batch`` (on CPU, float32), (N, K, V), and the matching
    ``scored_positions`` batch. Only the scored positions are unembedded (``achilles.models.logits_mask``).
    ``precision`` ``bf16``: the forward under bf16 autocast, as a bf16 run trains (``achilles.training.precision``)."""
    compact = scored_positions(batch)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out = torch.zeros(len(batch), compact.mask.shape[1], 0)
    try:
        for i in range(0, len(batch), chunk_size):
            rows = slice(i, i + chunk_size)
            with autocast(precision, device):
                chunk = logits_at(model, batch.tokens[rows].to(device), batch.mask[rows].to(device))
            chunk = chunk.float().cpu()
            if i == 0:
                out = chunk.new_zeros(len(batch), compact.mask.shape[1], chunk.shape[-1])
            out[rows][compact.mask[rows]] = chunk
            if on_chunk is not None:
                on_chunk(len(batch.tokens[rows]))  # a progress bar's update: samples done
    finally:
        model.train(was_training)
    return out, compact


def evaluate(model: torch.nn.Module, task: Task, splits: Iterable[str], samples: int | None = None,
             seed: int = 0, data: dict[str, Batch] | None = None, chunk_size: int = 1024,
             precision: str | None = None, progress: bool | None = False) -> dict[str, dict[str, float]]:
    """``{split: task.metrics(...)}`` for each split; ``data`` supplies pre-generated batches.
    ``precision``: the run's (``bf16``: the forward in bf16 autocast, so the numbers are those of
    the model as it trains; metrics and loss are computed from float32 logits either way).
    ``progress``: a bar per split on stderr (None: in a terminal only, as ``train`` shows one)."""
    from tqdm.auto import tqdm

    results: dict[str, dict[str, float]] = {}
    for split in splits:
        batch = data[split] if data and split in data else task.generate(split, samples, seed=seed)
        with tqdm(total=len(batch), unit="sample", desc=f"eval {split}", leave=False, dynamic_ncols=True,
                  disable=(not progress) if progress is not None else None, file=sys.stderr) as bar:
            logits, restricted = predict_logits(model, batch, chunk_size, precision, on_chunk=bar.update)
        metrics = task.metrics(logits, restricted)
        metrics["loss"] = task.loss(logits, restricted).item()
        results[split] = metrics
    return results
