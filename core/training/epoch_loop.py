"""The one epoch loop: trains one run or an ensemble of runs, epoch by epoch.

The loop owns what every training shares: the epoch order of the samples, the lr schedule, the
stop signal (Ctrl-C, SIGTERM), non-finite losses, the end-of-epoch evaluation and checkpoint of
each run, progress, log lines and trainer events. What a step computes is the *stepper*'s:
``LoopStepper`` steps each run's own model and optimizer in turn (a single run is a loop of one);
the ensemble's ``VmapStepper`` steps all runs in one batched forward and backward.

Each run is a *member* (``achilles.training.trainer.Trainer``): its folder, model, optimizer and epoch;
it evaluates, checkpoints and records itself. A member whose loss, weights or evaluation become
non-finite fails alone, keeping its last finite checkpoint; the others go on.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, Sequence

import torch
from tqdm.auto import tqdm

from achilles.training.threads import ThreadGovernor
from achilles.errors import AchillesError
from achilles.training.events import CheckpointSaved, EpochEnded, EventEmitter, RunEnded, RunFailed, RunStarted
from achilles.models.logits_mask import task_loss
from achilles.training.precision import autocast
from achilles.training.profiles import TrainSettings
from achilles.contract.task import Batch, Task

log = logging.getLogger("achilles.training")


@dataclass
class RunResult:
    path: Path
    status: str  # finished, interrupted (resumable) or failed (non-finite; the last finite checkpoint is kept)
    final_metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    epochs_completed: int = 0
    reason: str = ""  # why it failed


class NonFiniteError(AchillesError):
    """A run's weights or evaluation became NaN or infinite."""


class Member(Protocol):
    """One run as the loop sees it (``achilles.training.trainer.Trainer``)."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    task: Task
    settings: TrainSettings
    seed: int
    epoch: int

    def start(self) -> None: ...
    def end_epoch(self, loss: float, lr: float, train_seconds: float, n: int, evals: dict[str, Batch],
                  **extra: Any) -> tuple[dict, str]: ...
    def finish(self) -> RunResult: ...
    def interrupt(self) -> RunResult: ...
    def fail(self, what: str) -> RunResult: ...
    def event_fields(self) -> dict[str, Any]: ...


class Stepper(Protocol):
    """Computes the optimizer steps of the members."""

    method: str

    def step(self, batches: list[Batch], lr: float, alive: list[bool]) -> torch.Tensor:
        """One optimizer step of every living member on its batch; the losses (one per member)."""

    def sync(self, alive: list[bool]) -> None:
        """Make each living member's own model and optimizer current (before it evaluates)."""


class LoopStepper:
    """Each member's own model and optimizer, stepped in turn: the one-by-one arithmetic exactly."""

    method = "loop"

    def __init__(self, members: Sequence[Member]):
        self.members = list(members)

    def step(self, batches: list[Batch], lr: float, alive: list[bool]) -> torch.Tensor:
        losses = []
        for m, member in enumerate(self.members):
            if not alive[m]:
                losses.append(torch.tensor(float("nan"), device=batches[m].tokens.device))
                continue
            for group in member.optimizer.param_groups:
                group["lr"] = lr
            with autocast(member.settings.precision, batches[m].tokens.device):  # bf16: the forward only
                loss = task_loss(member.task, member.model, batches[m])  # unembeds the scored positions only
            loss = loss.float()  # backward, clipping and the optimizer see an fp32 loss (fp32 master weights)
            member.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if torch.isfinite(loss).item():  # no step on a non-finite loss: the member fails instead
                torch.nn.utils.clip_grad_norm_(member.model.parameters(), member.settings.grad_clip)
                member.optimizer.step()
            losses.append(loss.detach())
        return torch.stack(losses)

    def sync(self, alive: list[bool]) -> None:
        pass


def epoch_order(seed: int, epoch: int, n: int) -> torch.Tensor:
    """The order of the ``n`` training samples in ``epoch`` of a run with ``seed`` (on CPU)."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))


def training_data(task: Task, settings: TrainSettings, device: torch.device) -> tuple[Batch, dict[str, Batch]]:
    """The training split (on ``device``) and the evaluation batches of every split, generated once
    from ``settings.data_seed`` (resolved: a run's is its seed unless pinned, ``TrainSettings.resolved``)."""
    if settings.data_seed is None:
        raise AchillesError("training data needs a resolved data seed (TrainSettings.resolved(seed))")
    train = task.generate("train", settings.train_samples, seed=settings.data_seed)
    evals = {split: task.generate(split, settings.eval_samples, seed=settings.data_seed)
             for split in task.splits if split != "train"}
    if "train" in task.splits:  # train accuracy on a slice of what is trained on
        evals["train"] = train[: settings.eval_samples or min(len(train), 10_000)]
    return train.to(device), evals


Data = tuple[Batch, dict[str, Batch]]


def members_data(members: Sequence[Member], device: torch.device) -> list[Data]:
    """Each member's training and evaluation data (``training_data`` of its own data seed), generated
    once per distinct data seed: members of equal data seed share one copy."""
    by_seed: dict[int, Data] = {}
    for member in members:
        if member.settings.data_seed not in by_seed:
            by_seed[member.settings.data_seed] = training_data(member.task, member.settings, device)
    return [by_seed[member.settings.data_seed] for member in members]


class StopSignal:
    """SIGTERM (kill) stops training at the next step, like Ctrl-C, keeping the last checkpoint.
    Use as a context manager; outside the main thread it only reports Ctrl-C."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._previous = None

    def __enter__(self) -> "StopSignal":
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, lambda *_: self._event.set())
        return self

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)

    def is_set(self) -> bool:
        return self._event.is_set()


class _StopRequested(Exception):
    pass


def train_epochs(members: Sequence[Member], stepper: Stepper, data: Data | Sequence[Data],
                 progress: bool | None = None) -> list[RunResult]:
    """Train ``members`` (equal task, settings but the data seed, and epoch) to their last epoch; one
    result each. ``data``: one (train, evals) for all members, or one per member (``members_data``;
    the training splits must have equal sizes). Each member's run-folder lock is released when this
    ends, however it ends."""
    try:
        return _train_epochs(members, stepper, data, progress)
    finally:
        for member in members:
            close = getattr(member, "close", None)
            if close is not None:
                close()


def _train_epochs(members: Sequence[Member], stepper: Stepper, data: Data | Sequence[Data],
                  progress: bool | None = None) -> list[RunResult]:
    first, size = members[0], len(members)
    datas = [data] * size if isinstance(data, tuple) else list(data)
    trains, evals = [d[0] for d in datas], [d[1] for d in datas]
    s, task, epoch0 = first.settings, first.task, first.epoch
    device = trains[0].tokens.device
    n = len(trains[0])
    if len(datas) != size or any(len(t) != n for t in trains):
        raise AchillesError("the members of an ensemble need training splits of one size, one per member")
    steps_per_epoch = max(1, -(-n // s.batch_size))
    extra = {"ensemble": size, "ensemble_method": stepper.method} if size > 1 else {}
    events = EventEmitter()
    results: list[RunResult | None] = [None] * size
    alive = [True] * size

    def fail(m: int, what: str) -> None:
        alive[m] = False
        results[m] = members[m].fail(what)
        events.emit(RunFailed(**members[m].event_fields(), reason=results[m].reason))
        if size > 1:
            log.warning(f"{results[m].path}: {results[m].reason} (this member stopped; the other members go on)")

    for member in members:
        member.start()
        events.emit(RunStarted(**member.event_fields(), epochs=s.epochs, settings=s.to_dict(),
                               model=dict(getattr(member.model, "config", {}))))
    bar = tqdm(total=s.epochs * steps_per_epoch, initial=epoch0 * steps_per_epoch, unit="step", dynamic_ncols=True,
               disable=(not progress) if progress is not None else None, file=sys.stderr,
               desc=f"ensemble of {size}" if size > 1 else None)
    epoch = epoch0
    threads = ThreadGovernor.for_training(device.type)  # None unless the CLI left threads to achilles
    try:
        with StopSignal() as stop:
            while epoch < s.epochs and any(alive):
                started = time.perf_counter()
                orders = torch.stack([epoch_order(mb.seed, epoch, n) for mb in members]).to(device)
                loss_sums = torch.zeros(size, device=device)
                for member in members:
                    member.model.train()
                for step in range(steps_per_epoch):
                    if stop.is_set():
                        raise _StopRequested()
                    idx = orders[:, step * s.batch_size: (step + 1) * s.batch_size]
                    lr = s.lr_at(epoch + step / steps_per_epoch)
                    losses = stepper.step([trains[m][idx[m]] for m in range(size)], lr, alive)
                    if threads is not None:
                        threads.tick()
                    values = losses.tolist()
                    for m, value in enumerate(values):
                        if alive[m] and not torch.isfinite(torch.tensor(value)):
                            fail(m, f"loss became {value} at epoch {epoch + 1}, step {step + 1}")
                    loss_sums += torch.where(torch.tensor(alive, device=device), losses.detach(), 0.0)
                    _show_step(bar, epoch, s.epochs, values, alive)
                    if not any(alive):
                        break
                if not any(alive):
                    break
                train_seconds = time.perf_counter() - started
                stepper.sync(alive)
                epoch += 1
                records = {}
                for m, member in enumerate(members):
                    if not alive[m]:
                        continue
                    try:
                        record, sha = member.end_epoch((loss_sums[m] / steps_per_epoch).item(), lr, train_seconds,
                                                       n, evals[m], **extra)
                    except NonFiniteError as exc:
                        fail(m, str(exc))
                        continue
                    records[m] = record
                    events.emit(EpochEnded(**member.event_fields(), record=record))
                    events.emit(CheckpointSaved(**member.event_fields(), weights_sha256=sha))
                if records:
                    log.info(_epoch_line(task, epoch, s.epochs, records, size, train_seconds))
    except (_StopRequested, KeyboardInterrupt):
        bar.close()
        for m, member in enumerate(members):
            if alive[m]:
                results[m] = member.interrupt()
                events.emit(RunEnded(**member.event_fields(), status="interrupted"))
        done = min(member.epoch for member in members)
        log.info(f"Interrupted after epoch {done}/{s.epochs}; each member keeps its checkpoint of epoch {done}."
                 if size > 1 else f"Interrupted after epoch {done}/{s.epochs}; the checkpoint of epoch {done} is "
                 f"kept. Resume with: achilles train --resume {results[0].path}")
        return results  # type: ignore[return-value]
    bar.close()
    for m, member in enumerate(members):
        if alive[m]:
            results[m] = member.finish()
            events.emit(RunEnded(**member.event_fields(), status="finished", final_metrics=results[m].final_metrics))
    return results  # type: ignore[return-value]


def _show_step(bar: tqdm, epoch: int, epochs: int, values: list[float], alive: list[bool]) -> None:
    bar.update(1)
    shown = " ".join(f"{v:.3f}" if a else "-" for v, a in zip(values[:4], alive))
    bar.set_postfix_str(f"epoch {epoch + 1}/{epochs} loss {shown}" + (" …" if len(values) > 4 else ""))


def _epoch_line(task: Task, epoch: int, epochs: int, records: dict[int, dict], size: int, seconds: float) -> str:
    metric = task.headline_metric
    if size == 1:
        record = records[0]
        summary = "  ".join(f"{sp} {metric} {m.get(metric, float('nan')):.3f}" for sp, m in record["metrics"].items())
        return (f"epoch {epoch}/{epochs}  loss {record['loss']:.4f}  {summary}  "
                f"({seconds:.1f}s, {record['samples_per_second']:.0f} samples/s)")
    heads = []
    for m in range(size):
        value = records[m]["metrics"].get(task.headline_split, {}).get(metric) if m in records else None
        heads.append("-" if value is None else f"{value:.3f}")
    return f"epoch {epoch}/{epochs}  {task.headline_split} {metric} per member: {' '.join(heads)}  ({seconds:.1f}s)"
