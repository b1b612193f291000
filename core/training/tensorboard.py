"""The first-party TensorBoard writer: a trainer-event listener that writes each run's epoch
metrics into ``RUN/tensorboard/`` (``achilles train --log tensorboard``; needs the optional extra
``pip install "achilles[tensorboard]"``). Scalars: ``training/loss``, ``training/lr``,
``training/samples_per_second`` and ``<split>/<metric>`` for every evaluated split, per epoch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from achilles.errors import AchillesError
from achilles.training.events import EpochEnded, RunEnded, RunFailed, TrainerEvent, epoch_scalars
from achilles.contract.hookspecs import hookimpl
from achilles.runs.layout import TENSORBOARD_DIR



def summary_writer_class() -> Any:
    """torch's SummaryWriter, or a one-line error saying how to install TensorBoard."""
    try:
        from torch.utils.tensorboard import SummaryWriter  # optional: the tensorboard extra
    except ImportError:
        raise AchillesError('--log tensorboard needs TensorBoard: pip install "achilles[tensorboard]"') from None
    return SummaryWriter


class TensorBoardWriter:
    """Register as a plugin (``register_plugin(TensorBoardWriter(), "tensorboard")``): every run
    trained in this process then logs to its own ``tensorboard/`` folder."""

    def __init__(self, writer_class: Any = None):
        self.writer_class = writer_class or summary_writer_class()
        self._writers: dict[Path, Any] = {}

    def _writer(self, run: Path) -> Any:
        if run not in self._writers:
            from achilles.runs.ownership import claim, owned_folder

            claim(run, TENSORBOARD_DIR)
            owned_folder(run, TENSORBOARD_DIR)  # never written through a link out of the run
            self._writers[run] = self.writer_class(log_dir=str(Path(run) / TENSORBOARD_DIR))
        return self._writers[run]

    @hookimpl
    def on_trainer_event(self, event: TrainerEvent) -> None:
        if isinstance(event, EpochEnded):
            writer = self._writer(event.run)
            for tag, value in epoch_scalars(event.record).items():  # the same scalars as --log wandb
                writer.add_scalar(tag, value, event.epoch)
            writer.flush()
        elif isinstance(event, (RunEnded, RunFailed)) and event.run in self._writers:
            self._writers.pop(event.run).close()
