"""The first-party Weights & Biases writer: a trainer-event listener, like the TensorBoard writer
(``tensorboard.py``), that logs each run's epochs to a W&B run (``achilles train --log wandb``;
needs the optional extra ``pip install "achilles[wandb]"``).

It logs exactly the TensorBoard writer's scalars (``events.epoch_scalars``: ``training/loss``,
``training/lr``, ``training/samples_per_second``, ``<split>/<metric>``) with the epoch as W&B's
step, the run's settings as the W&B config, and the final metrics as its summary. W&B's own files
go to ``RUN/wandb/``. W&B's environment variables apply as usual: ``WANDB_MODE=offline`` logs
without a network (``wandb sync RUN/wandb/offline-run-*`` uploads later), ``WANDB_PROJECT``
names the project (default ``achilles``), ``WANDB_ENTITY`` the team."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from achilles.errors import AchillesError
from achilles.training.events import EpochEnded, RunEnded, RunFailed, RunStarted, TrainerEvent, epoch_scalars
from achilles.contract.hookspecs import hookimpl

WANDB_DIR = "wandb"


def wandb_module() -> Any:
    """The ``wandb`` package, or a one-line error saying how to install it."""
    try:
        import wandb  # optional: the wandb extra
    except ImportError:
        raise AchillesError('--log wandb needs Weights & Biases: pip install "achilles[wandb]"') from None
    return wandb


class WandbWriter:
    """Register as a plugin (``register_plugin(WandbWriter(), "wandb")``): every run trained in
    this process then logs to its own W&B run (several at once in a sweep's ensemble)."""

    def __init__(self, wandb: Any = None, project: str | None = None):
        self.wandb = wandb or wandb_module()
        self.project = project or os.environ.get("WANDB_PROJECT") or "achilles"
        self._runs: dict[Path, Any] = {}

    def _start(self, event: TrainerEvent, config: dict[str, Any]) -> Any:
        if event.run not in self._runs:
            from achilles.runs.ownership import claim, owned_folder

            claim(event.run, WANDB_DIR)
            owned_folder(event.run, WANDB_DIR)  # never written through a link out of the run
            self._runs[event.run] = self.wandb.init(
                project=self.project, name=Path(event.run).name, dir=str(event.run), reinit="create_new",
                config={"arch": event.arch, "task": event.task, **config})
        return self._runs[event.run]

    @hookimpl
    def on_trainer_event(self, event: TrainerEvent) -> None:
        if isinstance(event, RunStarted):
            self._start(event, {"epochs": event.epochs, "start_epoch": event.epoch,
                                "training": dict(event.settings), "model": dict(event.model)})
        elif isinstance(event, EpochEnded):
            self._start(event, {}).log(epoch_scalars(event.record), step=event.epoch)
        elif isinstance(event, (RunEnded, RunFailed)) and event.run in self._runs:
            run = self._runs.pop(event.run)
            if isinstance(event, RunEnded):
                run.summary["status"] = event.status
                for split, metrics in (event.final_metrics or {}).items():
                    for name, value in (metrics.items() if isinstance(metrics, dict) else ()):
                        run.summary[f"{split}/{name}"] = value
            else:
                run.summary["status"] = "failed"
                run.summary["failure"] = event.reason
            run.finish(exit_code=1 if isinstance(event, RunFailed) else 0)
