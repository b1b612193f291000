"""Training: one run of an architecture on a task, into a run folder that resumes exactly.

The whole training split is generated once and held on the training device; each epoch
draws its order from a generator seeded by (seed, epoch), so a run resumed from an epoch
checkpoint ends with the same weights as one never interrupted.
"""

from __future__ import annotations

import inspect
import json
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import torch

from . import __version__
from .api import _registry, create_model, get_task
from .errors import AchillesError, CheckpointError, ConfigError
from .evaluation import evaluate
from .profiles import TrainSettings, settings_for
from .runs import INIT_WEIGHTS, RunFolder, atomic_write_json, load_tensors, save_tensors
from .task import Batch, Task

CHECKPOINT_STATE = "checkpoint/state.json"


class TrainingDiverged(AchillesError):
    """The loss became NaN or infinite."""


@dataclass
class RunResult:
    path: Path
    status: str
    final_metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    epochs_completed: int = 0


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


def _factory_default(arch: str, setting: str, fallback: Any) -> Any:
    try:
        param = inspect.signature(_registry("architecture").get(arch).factory).parameters.get(setting)
    except (TypeError, ValueError):
        return fallback
    return fallback if param is None or param.default is inspect.Parameter.empty else param.default


def default_run_name(arch: str, task: str, model_config: dict, seed: int, profile: str) -> str:
    """Zoo-style name, e.g. ``mamba2-residual.inverse-l2-g0.5-s0`` (``-quick`` for the quick profile)."""
    name = f"{arch}.{task}-l{model_config.get('n_layers', '?')}-g{model_config.get('gamma', '?')}-s{seed}"
    return name if profile == "paper" else f"{name}-{profile}"


def build_task_and_model(arch: str, task_name: str, model_config: dict, task_config: dict,
                         seed: int) -> tuple[Task, torch.nn.Module, dict, dict]:
    """Build the task (with the model settings it depends on) and the seeded model."""
    task_cls = _registry("task").get(task_name).factory
    model_config = {**getattr(task_cls, "model_defaults", {}), **model_config}
    task_config = dict(task_config)
    for setting in getattr(task_cls, "model_settings", ()):
        if setting not in task_config:
            model_config.setdefault(setting, _factory_default(arch, setting, None))
            task_config[setting] = model_config[setting]
    task = get_task(task_name, **task_config)
    torch.manual_seed(seed)
    model = create_model(arch, **{"vocab_size": task.vocab_size, "max_len": task.seq_len, **model_config})
    return task, model, dict(model.config), dict(task.config)


# -- optimizer state <-> safetensors + JSON ---------------------------------------------------
def _optimizer_to_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    sd = opt.state_dict()
    tensors = {f"state.{pid}.{k}": v for pid, st in sd["state"].items() for k, v in st.items()
               if torch.is_tensor(v)}
    return tensors, {"param_groups": sd["param_groups"]}


def _optimizer_from_tensors(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("state."):
            _, pid, name = key.split(".", 2)
            state.setdefault(int(pid), {})[name] = value
    groups = meta["param_groups"]
    for group in groups:
        if "betas" in group:
            group["betas"] = tuple(group["betas"])
    opt.load_state_dict({"state": state, "param_groups": groups})


class _StopRequested(Exception):
    pass


class Trainer:
    """Trains ``model`` on ``task`` into ``run`` with ``settings``; call ``fit()``."""

    def __init__(self, run: RunFolder, task: Task, model: torch.nn.Module, settings: TrainSettings,
                 seed: int, device: torch.device, log: Callable[[str], None] = print,
                 progress: bool | None = None):
        self.run, self.task, self.settings, self.seed = run, task, settings, seed
        self.device = device
        self.model = model.to(device)
        self.log = log
        self.progress = progress
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=settings.lr_start,
                                           betas=settings.betas, eps=settings.eps,
                                           weight_decay=settings.weight_decay)
        self.epoch = 0
        self.eval_splits = tuple(task.splits)

    # -- data --------------------------------------------------------------------------------
    def _data(self) -> tuple[Batch, dict[str, Batch]]:
        s = self.settings
        train = self.task.generate("train", s.train_samples, seed=s.data_seed)
        evals = {split: self.task.generate(split, s.eval_samples, seed=s.data_seed)
                 for split in self.eval_splits if split != "train"}
        if "train" in self.eval_splits:  # train accuracy on a slice of what is trained on
            evals["train"] = train[: s.eval_samples or min(len(train), 10_000)]
        return train.to(self.device), evals

    # -- checkpoints -------------------------------------------------------------------------
    def save_checkpoint(self) -> None:
        """Epoch files first, then state.json naming them: a crash leaves the last complete set."""
        ckpt = self.run.path / "checkpoint"
        tag = f"epoch-{self.epoch:04d}"
        weights = {k: v for k, v in self.model.state_dict().items()}
        model_sha = save_tensors(ckpt / f"{tag}.model.safetensors", weights)
        opt_tensors, opt_meta = _optimizer_to_tensors(self.optimizer)
        opt_tensors["rng.torch"] = torch.get_rng_state()
        opt_sha = save_tensors(ckpt / f"{tag}.optimizer.safetensors", opt_tensors)
        atomic_write_json(self.run.path / CHECKPOINT_STATE, {
            "epoch": self.epoch, "model": f"{tag}.model.safetensors", "model_sha256": model_sha,
            "optimizer": f"{tag}.optimizer.safetensors", "optimizer_sha256": opt_sha, **opt_meta})
        for old in ckpt.glob("epoch-*.safetensors"):
            if not old.name.startswith(tag):
                old.unlink(missing_ok=True)
        sha = self.run.save_weights(weights)
        self.run.update_config(weights_sha256=sha, epochs_completed=self.epoch)

    def load_checkpoint(self) -> None:
        state_file = self.run.path / CHECKPOINT_STATE
        if not state_file.is_file():
            self.epoch = 0
            return
        try:
            state = json.loads(state_file.read_text())
        except json.JSONDecodeError as exc:
            raise CheckpointError(f"{state_file} is corrupt ({exc}); cannot resume") from None
        ckpt = state_file.parent
        weights = load_tensors(ckpt / state["model"], state["model_sha256"])
        opt_tensors = load_tensors(ckpt / state["optimizer"], state["optimizer_sha256"])
        self.model.load_state_dict({k: v.to(self.device) for k, v in weights.items()})
        torch.set_rng_state(opt_tensors.pop("rng.torch"))
        _optimizer_from_tensors(self.optimizer, {k: v.to(self.device) for k, v in opt_tensors.items()}, state)
        self.epoch = int(state["epoch"])

    # -- the loop ----------------------------------------------------------------------------
    def fit(self) -> RunResult:
        from tqdm.auto import tqdm

        s = self.settings
        train, evals = self._data()
        n = len(train)
        steps_per_epoch = max(1, -(-n // s.batch_size))
        bar = tqdm(total=s.epochs * steps_per_epoch, initial=self.epoch * steps_per_epoch, unit="step",
                   dynamic_ncols=True, disable=(not self.progress) if self.progress is not None else None,
                   file=sys.stderr)
        head_split, head_metric = self.task.headline_split, self.task.headline_metric
        last_headline = "-"
        self.run.update_config(status="running")
        stop = _install_stop_handler()
        try:
            while self.epoch < s.epochs:
                epoch = self.epoch
                started = time.perf_counter()
                order = epoch_order(self.seed, epoch, n).to(self.device)
                self.model.train()
                loss_sum, loss_count = torch.zeros((), device=self.device), 0
                for step in range(steps_per_epoch):
                    if stop.is_set():
                        raise _StopRequested()
                    idx = order[step * s.batch_size: (step + 1) * s.batch_size]
                    lr = s.lr_at(epoch + step / steps_per_epoch)
                    for group in self.optimizer.param_groups:
                        group["lr"] = lr
                    batch = train[idx]
                    loss = self.task.loss(self.model(batch.tokens), batch)
                    self.optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    loss_value = loss.item()
                    if not torch.isfinite(loss).item():
                        raise TrainingDiverged(
                            f"loss became {loss_value} at epoch {epoch + 1}, step {step + 1}; stopped. "
                            f"The last good checkpoint (epoch {self.epoch}) is kept in {self.run.path}. "
                            "Try a smaller --lr or a larger --gamma.")
                    torch.nn.utils.clip_grad_norm_(self.model.parameters(), s.grad_clip)
                    self.optimizer.step()
                    loss_sum += loss.detach()
                    loss_count += 1
                    bar.set_description(f"epoch {epoch + 1}/{s.epochs}")
                    bar.set_postfix_str(f"loss {loss_value:.4f} {head_split} {head_metric} {last_headline}")
                    bar.update(1)
                train_seconds = time.perf_counter() - started
                record = self.end_epoch((loss_sum / loss_count).item(), lr, train_seconds, n, evals)
                results = record["metrics"]
                headline = results.get(head_split, {}).get(head_metric)
                last_headline = f"{headline:.3f}" if headline is not None else "-"
                summary = "  ".join(f"{sp} {head_metric} {m.get(head_metric, float('nan')):.3f}"
                                    for sp, m in results.items())
                bar.write(f"epoch {self.epoch}/{s.epochs}  loss {record['loss']:.4f}  {summary}  "
                          f"({train_seconds:.1f}s, {record['samples_per_second']:.0f} samples/s)")
        except (_StopRequested, KeyboardInterrupt):
            bar.close()
            self.run.update_config(status="interrupted")
            self.log(f"Interrupted after epoch {self.epoch}/{s.epochs}; the checkpoint of epoch "
                     f"{self.epoch} is kept. Resume with: achilles train --resume {self.run.path}")
            return RunResult(self.run.path, "interrupted", epochs_completed=self.epoch)
        except TrainingDiverged:
            bar.close()
            self.run.update_config(status="failed")
            raise
        finally:
            stop.restore()
        bar.close()
        return self.finish()

    # -- shared with the ensemble trainer (core/ensemble.py) ---------------------------------
    def end_epoch(self, loss: float, lr: float, train_seconds: float, n: int, evals: dict[str, Batch],
                  **extra: Any) -> dict:
        """Evaluate the epoch just trained, append its record to metrics.jsonl and checkpoint."""
        results = evaluate(self.model, self.task, evals.keys(), data=evals)
        self.epoch += 1
        record = {"epoch": self.epoch, "loss": loss, "lr": lr, "train_seconds": round(train_seconds, 3),
                  "samples_per_second": round(n / train_seconds, 1), "metrics": results, **extra}
        self.run.append_metrics(record)
        self.save_checkpoint()
        return record

    def finish(self) -> RunResult:
        """Mark the run finished with its last epoch's metrics as the final ones."""
        head_split, head_metric = self.task.headline_split, self.task.headline_metric
        final = self.run.read_metrics()[-1]["metrics"] if self.epoch else {}
        head = final.get(head_split, {}).get(head_metric)
        self.run.update_config(
            status="finished", final_metrics=final, finished=_now(),
            headline={"split": head_split, "metric": head_metric, "value": head})
        return RunResult(self.run.path, "finished", final, self.epoch)


def epoch_order(seed: int, epoch: int, n: int) -> torch.Tensor:
    """The order of the ``n`` training samples in ``epoch`` of a run with ``seed`` (on CPU)."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))


class _StopFlag:
    """SIGTERM (kill) stops training at the next step, like Ctrl-C, keeping the last checkpoint."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._previous = None
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, lambda *_: self._event.set())

    def is_set(self) -> bool:
        return self._event.is_set()

    def restore(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


def _install_stop_handler() -> _StopFlag:
    return _StopFlag()


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# -- entry points -------------------------------------------------------------------------------
def start_run(arch: str, task: str, *, profile: str | None = None, seed: int = 0, device: str = "auto",
              out: str | Path | None = None, runs_dir: str | Path = "runs", model_config: dict | None = None,
              task_config: dict | None = None, overwrite: bool = False, log: Callable[[str], None] = print,
              progress: bool | None = None, **settings: Any) -> Trainer:
    """Create a new run folder and its Trainer (``settings`` override the profile's)."""
    dev = resolve_device(device)
    chosen = profile or default_profile(dev)
    if profile is None:
        why = "a GPU is available" if chosen == "paper" else "no GPU found; --profile paper for the paper's settings"
        log(f"Profile: {chosen} ({why})")
    task_obj, model, model_cfg, task_cfg = build_task_and_model(arch, task, dict(model_config or {}),
                                                                 dict(task_config or {}), seed)
    train_settings = settings_for(chosen, type(task_obj).training_defaults, **settings)
    path = Path(out) if out else Path(runs_dir) / default_run_name(arch, task, model_cfg, seed, chosen)
    run = RunFolder(path)
    if run.exists() and not overwrite:
        status = run.read_config().get("status")
        hint = (f"resume it with: achilles train --resume {path}" if status in ("running", "interrupted")
                else "choose another --out or pass --overwrite")
        raise AchillesError(f"run folder {path} already exists (status: {status}); {hint}")
    if overwrite and path.exists():
        for child in (path / "checkpoint").glob("*"):
            child.unlink()
        for name in ("metrics.jsonl", "model.safetensors", "README.md"):
            (path / name).unlink(missing_ok=True)
    run.write_config({
        "achilles_version": __version__, "arch": arch, "model": model_cfg, "task": task, "task_config": task_cfg,
        "training": train_settings.to_dict(), "seed": seed, "device": str(dev), "status": "created",
        "epochs_completed": 0, "weights_sha256": None, "final_metrics": {}, "headline": None,
        "created": _now(), "finished": None})
    save_tensors(path / INIT_WEIGHTS, model.state_dict())
    trainer = Trainer(run, task_obj, model, train_settings, seed, dev, log=log, progress=progress)
    trainer.save_checkpoint()  # epoch 0: a run killed during its first epoch still resumes
    return trainer


def resume_run(path: str | Path, device: str = "auto", log: Callable[[str], None] = print,
               progress: bool | None = None) -> Trainer:
    """The Trainer of an interrupted run, restored from its last checkpoint."""
    run = RunFolder(path)
    config = run.read_config()
    if config.get("status") == "finished":
        raise AchillesError(f"run {path} already finished ({config.get('epochs_completed')} epochs); nothing to resume")
    dev = resolve_device(device)
    task = get_task(config["task"], **config["task_config"])
    model = create_model(config["arch"], **config["model"])
    trainer = Trainer(run, task, model, TrainSettings.from_dict(config["training"]), int(config["seed"]), dev,
                      log=log, progress=progress)
    trainer.load_checkpoint()
    run.truncate_metrics(trainer.epoch)
    log(f"Resuming {path} from epoch {trainer.epoch}/{trainer.settings.epochs}")
    return trainer


def finalize_run(result: RunResult | str | Path) -> None:
    """Figures and model card of a run (called after fit, also for interrupted runs)."""
    from .plots import plot_training_curves
    from .run_card import write_card

    run = RunFolder(result.path if isinstance(result, RunResult) else result)
    if run.read_metrics():
        plot_training_curves(run)
    write_card(run.path)
