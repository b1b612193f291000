"""Evaluate a model on a task's splits, in memory-bounded chunks."""

from __future__ import annotations

from typing import Iterable

import torch

from .task import Batch, Task


def supervised_columns(batch: Batch) -> Batch:
    """The batch restricted to positions some sample is scored at (for `composite` and
    `inverse`, just the last one), so metrics never need the full (N, S, V) logits."""
    cols = batch.mask.any(0)
    return Batch(batch.tokens[:, cols], batch.targets[:, cols], batch.mask[:, cols], batch.meta)


@torch.no_grad()
def predict_logits(model: torch.nn.Module, batch: Batch, chunk_size: int = 1024) -> tuple[torch.Tensor, Batch]:
    """Logits at the supervised columns of ``batch`` (on CPU) and the matching column-restricted batch."""
    cols = batch.mask.any(0)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        outs = [model(batch.tokens[i: i + chunk_size].to(device))[:, cols.to(device)].float().cpu()
                for i in range(0, len(batch), chunk_size)]
    finally:
        model.train(was_training)
    return torch.cat(outs), supervised_columns(batch)


def evaluate(model: torch.nn.Module, task: Task, splits: Iterable[str], samples: int | None = None,
             seed: int = 0, data: dict[str, Batch] | None = None, chunk_size: int = 1024,
             ) -> dict[str, dict[str, float]]:
    """``{split: task.metrics(...)}`` for each split; ``data`` supplies pre-generated batches."""
    results: dict[str, dict[str, float]] = {}
    for split in splits:
        batch = data[split] if data and split in data else task.generate(split, samples, seed=seed)
        logits, restricted = predict_logits(model, batch, chunk_size)
        metrics = task.metrics(logits, restricted)
        metrics["loss"] = task.loss(logits, restricted).item()
        results[split] = metrics
    return results
