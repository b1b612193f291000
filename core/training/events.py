"""Trainer events: what the epoch loop tells plugins (``on_trainer_event``), e.g. to track
experiments. A listener that raises is reported once, gets no more events in that run and never
stops it."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from achilles.contract.loader import get_state

log = logging.getLogger("achilles.training.events")


@dataclass(frozen=True)
class TrainerEvent:
    """Something that happened to the run in folder ``run`` after ``epoch`` completed epochs."""

    kind: ClassVar[str] = "event"
    run: Path
    arch: str
    task: str
    epoch: int


@dataclass(frozen=True)
class RunStarted(TrainerEvent):
    """Training starts (or resumes at ``epoch``) towards ``epochs``."""

    kind: ClassVar[str] = "run_started"
    epochs: int = 0
    settings: dict[str, Any] = field(default_factory=dict)  # the training settings
    model: dict[str, Any] = field(default_factory=dict)     # the model settings


@dataclass(frozen=True)
class EpochEnded(TrainerEvent):
    """An epoch was trained and evaluated: ``record`` is its metrics.jsonl line (loss, lr,
    ``metrics`` per split, ...)."""

    kind: ClassVar[str] = "epoch_ended"
    record: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class CheckpointSaved(TrainerEvent):
    """The checkpoint of ``epoch`` was written; model.safetensors has sha256 ``weights_sha256``."""

    kind: ClassVar[str] = "checkpoint_saved"
    weights_sha256: str = ""


@dataclass(frozen=True)
class RunEnded(TrainerEvent):
    """Training stopped with ``status`` ``finished`` or ``interrupted`` (resumable)."""

    kind: ClassVar[str] = "run_ended"
    status: str = "finished"
    final_metrics: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RunFailed(TrainerEvent):
    """Training failed (weights or evaluation became non-finite): ``reason`` says how; the
    checkpoint of ``epoch`` (the last finite one) is kept."""

    kind: ClassVar[str] = "run_failed"
    reason: str = ""


def epoch_scalars(record: dict[str, Any]) -> dict[str, float]:
    """The scalars an experiment tracker logs for an epoch (``EpochEnded.record``), each under one
    name: ``training/loss``, ``training/lr``, ``training/samples_per_second`` (as recorded, nan included)
    and ``<split>/<metric>`` for every evaluated split's finite numbers. The TensorBoard and Weights &
    Biases writers both log exactly these (the epoch is their step, never a scalar of its own)."""
    import math

    out: dict[str, float] = {}
    for name in ("loss", "lr", "samples_per_second"):
        value = record.get(name)
        if isinstance(value, (int, float)) and not isinstance(value, bool):  # a diverged loss shows as nan
            out[f"training/{name}"] = float(value)
    for split, metrics in (record.get("metrics") or {}).items():
        for name, value in metrics.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                out[f"{split}/{name}"] = float(value)
    return out


class EventEmitter:
    """Sends events to every plugin implementing ``on_trainer_event``. A listener that raises
    anything (``SystemExit`` and ``KeyboardInterrupt`` included: plugin code can neither stop the
    program nor fake its success) is disabled for the rest of the run, with one warning; a real
    Ctrl-C pressed while a listener runs still interrupts training (``achilles.contract.isolation``)."""

    def __init__(self) -> None:
        self._disabled: set[str] = set()

    def emit(self, event: TrainerEvent) -> None:
        from achilles.contract.isolation import HookCall, hook_call

        call = HookCall(skip=set(self._disabled))
        with hook_call(call):  # pluggy calls the listeners: their tryfirst, trylast and wrappers work
            get_state().pm.hook.on_trainer_event(event=event)
        for plugin, exc in call.failures:
            self._disabled.add(plugin)
            log.warning(f"plugin {plugin!r} failed on a trainer event ({event.kind}: "
                        f"{type(exc).__name__}: {exc}); it gets no more events in this run, training goes on")
