"""Training: one run of an architecture on a task, into a run folder that resumes exactly.

The whole training split is generated once and held on the training device; each epoch
draws its order from a generator seeded by (seed, epoch), so a run resumed from an epoch
checkpoint ends with the same weights as one never interrupted. The epochs themselves are
``achilles.training.epoch_loop``'s, shared with the ensemble trainer.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from achilles import __version__
from achilles.contract.lookup import create_architecture, get_task, rebuild_task, registry
from achilles.runs.layout import CHECKPOINT_STATE
from achilles.training.checkpoint import load_checkpoint, save_checkpoint
from achilles.training.epoch_loop import LoopStepper, NonFiniteError, RunResult, epoch_order, train_epochs, training_data
from achilles.errors import AchillesError, CheckpointError, ConfigError
from achilles.training.evaluation import evaluate
from achilles.contract.checks import check_architecture_accepts
from achilles.training.environment import compute_paths, training_environment
from achilles.training.precision import check_precision
from achilles.training.profiles import TrainSettings, settings_for
from achilles.runs.layout import INIT_WEIGHTS
from achilles.runs.folder import RunFolder, saving_failed
from achilles.runs.run_lock import RunLock
from achilles.runs.ownership import check_owned_folders, clear_run_folder
from achilles.runs.folder import check_run_target
from achilles.runs.files import save_tensors
from achilles.contract.settings import factory_settings
from achilles.contract.task import Batch, Task
from achilles.runs.folder import default_run_name

__all__ = ["CHECKPOINT_STATE", "NonFiniteError", "RunResult", "Trainer", "build_task_and_model", "default_profile",
           "default_run_name", "epoch_order", "finalize_run", "make_optimizer", "no_weight_decay_names",
           "non_finite", "parameter_groups", "resolve_device", "resume_run", "start_run"]

log = logging.getLogger("achilles.training")

MAX_SEED = 2**32  # epoch_order seeds a generator with seed * 1_000_003 + epoch, which must fit 64 bits


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("device", f"{device!r} was asked for but CUDA is not available on this machine")
    try:
        return torch.device(device)
    except RuntimeError:
        raise ConfigError("device", f"{device!r} is not a device (try cpu, cuda, cuda:1 or auto)") from None


def default_profile(device: torch.device) -> str:
    return "paper" if device.type == "cuda" else "quick"


def build_task_and_model(arch: str, task_name: str, model_config: dict, task_config: dict,
                         seed: int, fits: TrainSettings | None = None,
                         device: torch.device | str = "cpu") -> tuple[Task, torch.nn.Module, dict, dict]:
    """Build the task (with the model settings it depends on) and the seeded model; with ``fits``,
    first refuse settings whose training cannot fit in memory (nothing allocated yet)."""
    task_cls = registry("task").get(task_name).factory
    model_config = {**getattr(task_cls, "model_defaults", {}), **model_config}
    task_config = dict(task_config)
    arch_settings = factory_settings(registry("architecture").get(arch).factory)
    for setting in getattr(task_cls, "model_settings", ()):
        if setting not in task_config:
            model_config.setdefault(setting, arch_settings.default(setting))
            task_config[setting] = model_config[setting]
    task = get_task(task_name, **task_config)
    model_settings = {"vocab_size": task.vocab_size, "max_len": task.seq_len, **model_config}
    vocab = model_settings["vocab_size"]
    if isinstance(vocab, int) and not isinstance(vocab, bool) and vocab < task.vocab_size:
        raise ConfigError("vocab_size", f"{vocab} is fewer tokens than task {task_name!r} uses ({task.vocab_size})")
    check_architecture_accepts(arch, registry("architecture").get(arch).factory, model_settings)
    if fits is not None:
        from achilles.models.limits import check_training_fits

        check_training_fits(arch, model_settings, task, fits.train_samples, fits.eval_samples, fits.batch_size, device)
    torch.manual_seed(seed)
    model = create_architecture(arch, **model_settings)
    return task, model, dict(model.config), dict(task.config)


def no_weight_decay_names(model: torch.nn.Module) -> set[str]:
    """Names of the parameters an architecture marks ``_no_weight_decay`` (mamba2: A_log, D, dt_bias)."""
    return {name for name, p in model.named_parameters() if getattr(p, "_no_weight_decay", False)}


def parameter_groups(named: list[tuple[str, torch.Tensor]], no_decay: set[str], weight_decay: float) -> list[dict]:
    """AdamW's parameter groups as mamba_ssm's training code builds them: the parameters named in
    ``no_decay`` get weight decay 0.0, all others ``weight_decay``. The no-decay group exists only
    when it has parameters, so the optimizer (and its checkpoints) of an architecture that marks
    none keeps its one group."""
    groups = [{"params": [p for name, p in named if name not in no_decay], "weight_decay": weight_decay}]
    quiet = [p for name, p in named if name in no_decay]
    if quiet:
        groups.append({"params": quiet, "weight_decay": 0.0})
    return groups


def make_optimizer(named: list[tuple[str, torch.Tensor]], no_decay: set[str], settings: TrainSettings) -> torch.optim.AdamW:
    """The profile's AdamW over ``named`` parameters, without weight decay on those in ``no_decay``."""
    return torch.optim.AdamW(parameter_groups(named, no_decay, settings.weight_decay), lr=settings.lr_start,
                             betas=settings.betas, eps=settings.eps, weight_decay=settings.weight_decay)


def non_finite(model: torch.nn.Module, results: dict[str, dict[str, float]]) -> str | None:
    """What is not finite after an epoch (a split's evaluation loss, or the weights), else None."""
    for split, metrics in results.items():
        loss = metrics.get("loss")
        if loss is not None and not torch.isfinite(torch.tensor(loss)):
            return f"the {split} loss is {loss}"
    if not torch.stack([p.isfinite().all() for p in model.parameters()]).all():
        return "the weights are not finite"
    return None


class Trainer:
    """One run: its folder, task, model, optimizer and settings. ``fit()`` trains it; the epoch
    loop (shared with ``EnsembleTrainer``) calls ``start``, ``end_epoch``, ``finish``,
    ``interrupt`` and ``fail``, which keep the run folder's record."""

    def __init__(self, run: RunFolder, task: Task, model: torch.nn.Module, settings: TrainSettings,
                 seed: int, device: torch.device, progress: bool | None = None):
        self.run, self.task, self.seed = run, task, seed
        # a record's data seed, else the run seed's; an unset precision: the device's default
        self.settings = settings.resolved(seed, device)
        self.device = device
        self.model = model.to(device)
        self.progress = progress
        self.optimizer = make_optimizer(list(self.model.named_parameters()), no_weight_decay_names(self.model),
                                        self.settings)
        self.epoch = 0
        self.lock: RunLock | None = None  # the run folder's one-writer lock, held from start_run/resume_run

    def close(self) -> None:
        """Let other processes write the run folder again (the epoch loop does this when it ends)."""
        if self.lock is not None:
            self.lock.release()

    def fit(self) -> RunResult:
        """Train to the last epoch: status finished, interrupted (resumable) or failed."""
        data = training_data(self.task, self.settings, self.device)
        return train_epochs([self], LoopStepper([self]), data, progress=self.progress)[0]

    # -- checkpoints -------------------------------------------------------------------------
    def save_checkpoint(self) -> str:
        """Checkpoint the current epoch; returns the sha256 of the run's model.safetensors."""
        return save_checkpoint(self.run, self.epoch, self.model, self.optimizer)

    def load_checkpoint(self) -> None:
        self.epoch = load_checkpoint(self.run, self.model, self.optimizer, self.device, self.settings.epochs)

    # -- what the epoch loop calls -----------------------------------------------------------
    def event_fields(self) -> dict[str, Any]:
        return {"run": self.run.path, "arch": getattr(self.model, "arch_name", ""), "task": self.task.name,
                "epoch": self.epoch}

    def start(self) -> None:
        if self.lock is not None:
            self.lock.acquire()  # again, when fit() runs a second time
        config = self.run.read_config()
        config.pop("failure", None)  # a failed run resumed from its last finite checkpoint starts afresh
        self.run.write_config({**config, "status": "running"})

    def end_epoch(self, loss: float, lr: float, train_seconds: float, n: int, evals: dict[str, Batch],
                  **extra: Any) -> tuple[dict, str]:
        """Evaluate the epoch just trained, append its record to metrics.jsonl and checkpoint it;
        (record, weights sha256). Raises NonFiniteError (nothing written) if the evaluation or the
        weights are not finite."""
        self.training_paths = compute_paths(self.model)  # read before evaluation calls the layers again
        results = evaluate(self.model, self.task, evals.keys(), data=evals,
                           precision=self.settings.precision)  # a bf16 run evaluates in bf16 too
        problem = non_finite(self.model, results)
        if problem:
            raise NonFiniteError(f"{problem} after epoch {self.epoch + 1}")
        self.epoch += 1
        record = {"epoch": self.epoch, "loss": loss, "lr": lr, "train_seconds": round(train_seconds, 3),
                  "samples_per_second": round(n / train_seconds, 1), "metrics": results, **extra}
        self.run.append_metrics(record)
        return record, self.save_checkpoint()

    def finish(self) -> RunResult:
        """Mark the run finished with its last epoch's metrics as the final ones."""
        head_split, head_metric = self.task.headline_split, self.task.headline_metric
        final = self.run.read_metrics()[-1]["metrics"] if self.epoch else {}
        head = final.get(head_split, {}).get(head_metric)
        extra = {}
        if getattr(self, "training_paths", None):  # unset when no epoch ran in this process
            extra["environment"] = {**(self.run.read_config().get("environment") or {}),
                                    "compute_paths": self.training_paths}
        self.run.update_config(
            status="finished", final_metrics=final, finished=_now(), **extra,
            headline={"split": head_split, "metric": head_metric, "value": head})
        return RunResult(self.run.path, "finished", final, self.epoch)

    def interrupt(self) -> RunResult:
        self.run.update_config(status="interrupted")
        return RunResult(self.run.path, "interrupted", epochs_completed=self.epoch)

    def fail(self, what: str) -> RunResult:
        """Mark the run failed because ``what`` became non-finite; its last checkpoint stays."""
        reason = (f"{what}; the last good checkpoint (epoch {self.epoch}) is kept in {self.run.path}. "
                  "Try a smaller --lr or a larger --gamma.")
        self.run.update_config(status="failed", failure=reason)
        return RunResult(self.run.path, "failed", epochs_completed=self.epoch, reason=reason)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# -- entry points -------------------------------------------------------------------------------
def start_run(arch: str, task: str, *, profile: str | None = None, seed: int = 0, device: str = "auto",
              out: str | Path | None = None, runs_dir: str | Path = "runs", model_config: dict | None = None,
              task_config: dict | None = None, overwrite: bool = False, progress: bool | None = None,
              **settings: Any) -> Trainer:
    """Create a new run folder and its Trainer (``settings`` override the profile's). Every setting
    is checked, and the memory need estimated, before any folder is created; the Trainer holds the
    folder's lock until its training ends."""
    from achilles.contract.provenance import run_provenance

    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < MAX_SEED:
        raise ConfigError("seed", f"must be a whole number from 0 to {MAX_SEED - 1}, got {seed!r}")
    dev = resolve_device(device)
    chosen = profile or default_profile(dev)
    if profile is None:
        why = "a GPU is available" if chosen == "paper" else "no GPU found; --profile paper for the paper's settings"
        log.info(f"Profile: {chosen} ({why})")
    task_defaults = getattr(registry("task").get(task).factory, "training_defaults", {})
    # run.json records the data seed and the precision (an unset one: the device's default)
    train_settings = settings_for(chosen, task_defaults, **settings).resolved(seed, dev)
    check_precision(train_settings.precision, dev)  # bf16 where autocast cannot: refused before any folder
    task_obj, model, model_cfg, task_cfg = build_task_and_model(arch, task, dict(model_config or {}),
                                                                 dict(task_config or {}), seed,
                                                                 fits=train_settings, device=dev)
    path = Path(out) if out else Path(runs_dir) / default_run_name(arch, task, model_cfg, seed, chosen)
    check_run_target(path)  # never into a user's folder: nothing is written there
    path.mkdir(parents=True, exist_ok=True)
    run = RunFolder(path)
    lock = run.lock("train").acquire()
    try:
        if run.exists() and not overwrite:
            status = run.read_config().get("status")
            hint = (f"resume it with: achilles train --resume {path}" if status in ("running", "interrupted")
                    else "choose another --out or pass --overwrite")
            raise AchillesError(f"run folder {path} already exists (status: {status}); {hint}")
        if overwrite:
            clear_run_folder(path)  # only what the run owns; links are removed, never followed
        check_owned_folders(path)
        run.write_config({
            "achilles_version": __version__, "arch": arch, "model": model_cfg, "task": task, "task_config": task_cfg,
            "training": train_settings.to_dict(), "seed": seed, "device": str(dev), "status": "created",
            "epochs_completed": 0, "weights_sha256": None, "final_metrics": {}, "headline": None,
            "created": _now(), "finished": None, "provided_by": run_provenance(arch, task),
            "environment": training_environment(dev)})
        try:
            run.update_config(init_sha256=save_tensors(path / INIT_WEIGHTS, model.state_dict()))
        except OSError as exc:  # a full disk: the run says so (failed, with the file) in one line
            raise saving_failed(run, exc) from None
        trainer = Trainer(run, task_obj, model, train_settings, seed, dev, progress=progress)
        trainer.lock = lock
        trainer.save_checkpoint()  # epoch 0: a run killed during its first epoch still resumes
    except BaseException:
        lock.release()
        raise
    return trainer


def resume_run(path: str | Path, device: str = "auto", progress: bool | None = None) -> Trainer:
    """The Trainer of an interrupted run, restored from its last checkpoint."""
    from achilles.contract.provenance import require_components

    run = RunFolder(path)
    run.read_config()  # a run folder at all, before anything (the lock file) is written into it
    dev = resolve_device(device)
    lock = run.lock("train").acquire()
    try:
        config = run.read_config()  # again: another process may have changed it before the lock
        if config.get("status") == "finished":
            raise AchillesError(f"run {path} already finished ({config.get('epochs_completed')} epochs); "
                                "nothing to resume")
        check_owned_folders(path)
        require_components(config)
        settings = training_settings_of(config, run.path)
        check_precision(settings.precision, dev)  # the run keeps its precision; refused where it cannot run
        task = rebuild_task(config["task"], config.get("task_config", {}))
        from achilles.models.limits import check_training_fits  # the run's own config is untrusted too: checked before building

        check_training_fits(config["arch"], config.get("model", {}), task, settings.train_samples,
                            settings.eval_samples, settings.batch_size, dev)
        model = create_architecture(config["arch"], **config.get("model", {}))
        trainer = Trainer(run, task, model, settings, int(config.get("seed", 0)), dev, progress=progress)
        trainer.lock = lock
        trainer.load_checkpoint()
        run.truncate_metrics(trainer.epoch)
    except BaseException:
        lock.release()
        raise
    log.info(f"Resuming {path} from epoch {trainer.epoch}/{trainer.settings.epochs}")
    return trainer


def training_settings_of(config: dict, run_dir: Path) -> TrainSettings:
    """The training settings a run record holds, refused in one line when they are malformed."""
    training = dict(config.get("training") or {})
    training.setdefault("precision", "fp32")  # runs recorded before the setting trained in fp32
    try:
        return TrainSettings.from_dict(training).validate()
    except (TypeError, ValueError, ConfigError) as exc:
        raise CheckpointError(f"{run_dir / 'config.json'}: the training settings are malformed ({exc}); "
                              "restore the file, or train the run again with --overwrite") from None


def finalize_run(result: RunResult | str | Path) -> None:
    """Figures and model card of a run (after fit, also for interrupted and failed runs). Never
    raises: a figure or card failing must not lose the trained weights."""
    from achilles.runs.figures import plot_training_curves  # lazy, like the card: only once training is over
    from achilles.zoo.card import write_card

    run = RunFolder(result.path if isinstance(result, RunResult) else result)
    try:
        with run.lock("train"):  # no other writer between training and its card
            if run.read_metrics():
                plot_training_curves(run)
            write_card(run.path)
    except Exception as exc:
        log.warning(f"could not write figures/card of {run.path}: {type(exc).__name__}: {exc}")
