"""Logits only where they are read: a model unembeds just the positions a task scores.

The architecture contract (``achilles.HookedModel``): ``model(tokens, logits_mask=mask)`` with a
bool ``mask`` (N, S) returns the logits (K, V) at ``mask.nonzero()``, in row-major order (the
rows of ``full_logits[mask]``). Training, evaluation and ensembles pass the task's loss mask, so
a task scoring 4 positions of 64 does not pay for (and hold) 64 unembeddings per sample; the
hook points and ``model(tokens)`` still give full logits to whoever asks (probes).

A model whose ``forward`` has no ``logits_mask`` parameter (a third-party architecture written
before it) keeps working: ``accepts_logits_mask`` finds that out once per model class from the
signature, and the helpers here select from its full logits instead.
"""

from __future__ import annotations

import inspect
from functools import lru_cache

import torch

from achilles.contract.task import Batch, Task

__all__ = ["accepts_logits_mask", "logits_at", "reads_selected_logits", "task_loss"]


@lru_cache(maxsize=None)
def _forward_accepts(cls: type) -> bool:
    try:
        return "logits_mask" in inspect.signature(cls.forward).parameters
    except (TypeError, ValueError):  # a forward without a signature: assume the old contract
        return False


def accepts_logits_mask(model: torch.nn.Module) -> bool:
    """Whether ``model(tokens, logits_mask=...)`` is supported (decided once per class)."""
    return _forward_accepts(type(model))


def logits_at(model: torch.nn.Module, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The logits (K, V) at ``mask.nonzero()`` (row-major) of ``model`` on ``tokens`` (N, S)."""
    if accepts_logits_mask(model):
        return model(tokens, logits_mask=mask)
    return model(tokens)[mask]


@lru_cache(maxsize=None)
def _task_reads_selected(cls: type) -> bool:
    return cls.loss is Task.loss or cls.masked_loss is not Task.masked_loss


def reads_selected_logits(task: Task) -> bool:
    """Whether ``task``'s loss is computed from the scored positions' logits alone: true unless
    the task overrides ``loss`` without overriding ``masked_loss`` (then it gets full logits)."""
    return _task_reads_selected(type(task))


def task_loss(task: Task, model: torch.nn.Module, batch: Batch) -> torch.Tensor:
    """``task``'s training loss of ``model`` on ``batch``, unembedding only the scored positions
    whenever the task and the model allow it."""
    if reads_selected_logits(task):
        return task.masked_loss(logits_at(model, batch.tokens, batch.mask), batch)
    return task.loss(model(batch.tokens), batch)
