"""Ensembled training: several runs that share every shape train as one batched model.

Cells of a sweep that differ only in seed and/or gamma (same architecture, widths, depth, task
and training settings) have parameters of identical shapes. ``EnsembleTrainer`` takes the
ordinary ``Trainer`` of each such run (from ``start_run`` or ``resume_run``) and trains them
together, keeping every run's semantics of the one-by-one trainer:

* initialisation: each member is the seeded ``create_model`` of its own run;
* data: the training split is generated once; member m reads its epoch in the order
  ``epoch_order(seed_m, epoch)``, the same batches the one-by-one trainer would draw;
* optimisation: AdamW on the stacked parameters is element-wise, so it is each member's AdamW;
  the gradient norm is clipped **per member** (each member's own global norm, as
  ``clip_grad_norm_`` computes it for one run); the lr schedule is the profile's;
* output: one ordinary run folder per member (metrics.jsonl, checkpoints, weights, config
  with final metrics), written by the member's own ``Trainer`` (``end_epoch`` / ``finish``),
  so each member resumes, loads and probes like any run.

Two methods compute the members' steps:

``vmap``  ``torch.func.stack_module_state`` + ``functional_call`` under ``torch.func.vmap``: one
          forward and one backward over all members (batched matmuls). The fast path.
``loop``  each member's own module and optimizer, stepped in turn on shared data: the one-by-one
          arithmetic exactly, for architectures whose forward ``vmap`` cannot trace.

``auto`` (the default) checks on a few samples that the vmapped forward reproduces every
member's own forward (else it uses ``loop`` and says why), then times one forward and backward
of each method on one batch and trains with the faster (benchmarks/RESULTS-sweep.md: on a CPU,
``vmap`` is about as fast as one-by-one for the Transformer and half as fast for mamba2, whose
fast CPU path is off under ``torch.func``).
"""

from __future__ import annotations

import copy
import sys
import time
from typing import Callable, Sequence

import torch

from .errors import AchillesError, ConfigError
from .trainer import RunResult, Trainer, _install_stop_handler, _StopRequested, epoch_order

METHODS = ("auto", "vmap", "loop")


def shape_signature(model: torch.nn.Module) -> tuple:
    """Names, shapes and dtypes of a model's parameters and buffers (equal for stackable models)."""
    return tuple((name, tuple(t.shape), str(t.dtype))
                 for name, t in list(model.named_parameters()) + list(model.named_buffers()))


class EnsembleTrainer:
    """Train the runs of ``trainers`` together; ``fit()`` returns one ``RunResult`` per run."""

    def __init__(self, trainers: Sequence[Trainer], method: str = "auto",
                 log: Callable[[str], None] = print, progress: bool | None = None):
        if method not in METHODS:
            raise ConfigError("ensemble method", f"{method!r} is not one of {', '.join(METHODS)}")
        if not trainers:
            raise AchillesError("an ensemble needs at least one run")
        self.trainers = list(trainers)
        self.log = log
        self.progress = progress
        self._check_compatible()
        first = self.trainers[0]
        self.settings, self.task, self.device = first.settings, first.task, first.device
        self.epoch = first.epoch
        self.method = method

    @property
    def size(self) -> int:
        return len(self.trainers)

    def _check_compatible(self) -> None:
        first = self.trainers[0]
        want = (first.settings.to_dict(), first.task.name, first.task.config, str(first.device),
                first.epoch, shape_signature(first.model))
        for t in self.trainers[1:]:
            got = (t.settings.to_dict(), t.task.name, t.task.config, str(t.device), t.epoch,
                   shape_signature(t.model))
            for what, a, b in zip(("training settings", "task", "task settings", "device", "epoch",
                                   "parameter shapes"), want, got):
                if a != b:
                    raise AchillesError(f"runs {first.run.path} and {t.run.path} cannot train as one "
                                        f"ensemble: their {what} differ")

    # -- the vmapped forward -------------------------------------------------------------------
    def _stack(self):
        from torch.func import functional_call, stack_module_state, vmap

        models = [t.model for t in self.trainers]
        params, buffers = stack_module_state(models)
        base = copy.deepcopy(models[0])

        def forward_one(p, b, tokens):
            return functional_call(base, (p, b), (tokens,))

        return params, buffers, base, vmap(forward_one, in_dims=(0, 0, 0))

    def _vmap_matches(self, train) -> str | None:
        """None if the vmapped forward reproduces each member's own forward; else why not."""
        probe = train.tokens[: min(8, len(train))]
        try:
            params, buffers, base, forward = self._stack()
            base.train()
            with torch.no_grad():
                batched = forward(params, buffers, probe.unsqueeze(0).expand(self.size, *probe.shape))
                for m, t in enumerate(self.trainers):
                    t.model.train()
                    own = t.model(probe)
                    if not torch.allclose(batched[m], own, rtol=1e-4, atol=1e-5, equal_nan=True):
                        return (f"the vmapped forward of member {m} differs from its own forward by "
                                f"{(batched[m] - own).abs().max().item():.2e}")
        except Exception as exc:  # an op vmap cannot batch, data-dependent control flow, ...
            return f"vmap cannot batch this architecture's forward ({type(exc).__name__}: {exc})"
        return None

    def _faster_method(self, train, repeats: int = 2) -> str:
        """``vmap`` or ``loop``, whichever runs a forward and backward of one batch faster here.

        Measured, not assumed: on a GPU the batched forward wins, but on a CPU an architecture
        may have a faster path that ``torch.func`` transforms switch off (mamba2's CPU mixer)."""
        batch = train[: min(len(train), self.settings.batch_size)]
        params, buffers, base, forward = self._stack()
        base.train()
        tokens = batch.tokens.unsqueeze(0).expand(self.size, *batch.tokens.shape)

        def batched():
            logits = forward(params, buffers, tokens)
            torch.stack([self.task.loss(logits[m], batch) for m in range(self.size)]).sum().backward()

        def looped():
            for t in self.trainers:
                t.model.train()
                self.task.loss(t.model(batch.tokens), batch).backward()

        times = {}
        for name, step in (("vmap", batched), ("loop", looped)):
            best = float("inf")
            for i in range(repeats + 1):  # the first call warms up
                if self.device.type == "cuda":
                    torch.cuda.synchronize(self.device)
                started = time.perf_counter()
                step()
                if self.device.type == "cuda":
                    torch.cuda.synchronize(self.device)
                if i:
                    best = min(best, time.perf_counter() - started)
            times[name] = best
        for t in self.trainers:
            t.model.zero_grad(set_to_none=True)
        choice = min(times, key=times.get)
        self.log(f"ensemble of {self.size}: one step takes {times['vmap']:.3f}s with vmap, "
                 f"{times['loop']:.3f}s in a loop; using {choice}")
        return choice

    # -- training ------------------------------------------------------------------------------
    def fit(self) -> list[RunResult]:
        from tqdm.auto import tqdm

        s, members = self.settings, self.trainers
        train, evals = members[0]._data()
        method = self.method
        if method in ("auto", "vmap") and self.size > 1:
            why = self._vmap_matches(train)
            if why is not None:
                if method == "vmap":
                    raise AchillesError(f"ensemble method vmap is not usable here: {why}")
                self.log(f"ensemble: {why}; training the members in a loop instead")
                method = "loop"
            elif method == "auto":
                method = self._faster_method(train)
        elif method == "auto":
            method = "loop"
        self.method_used = method

        n, size = len(train), self.size
        steps_per_epoch = max(1, -(-n // s.batch_size))
        bar = tqdm(total=s.epochs * steps_per_epoch, initial=self.epoch * steps_per_epoch, unit="step",
                   dynamic_ncols=True, disable=(not self.progress) if self.progress is not None else None,
                   file=sys.stderr, desc=f"ensemble of {size}")
        alive = [True] * size
        statuses = ["finished"] * size
        for t in members:
            t.run.update_config(status="running")

        if method == "vmap":
            params, buffers, base, forward = self._stack()
            names = list(params)
            flat = [params[k] for k in names]
            optimizer = torch.optim.AdamW(flat, lr=s.lr_start, betas=s.betas, eps=s.eps,
                                          weight_decay=s.weight_decay)
            _load_stacked_optimizer(optimizer, names, members)
            base.train()

        stop = _install_stop_handler()
        try:
            while self.epoch < s.epochs:
                epoch = self.epoch
                started = time.perf_counter()
                orders = torch.stack([epoch_order(t.seed, epoch, n) for t in members]).to(self.device)
                loss_sums = torch.zeros(size, device=self.device)
                for t in members:
                    t.model.train()
                for step in range(steps_per_epoch):
                    if stop.is_set():
                        raise _StopRequested()
                    idx = orders[:, step * s.batch_size: (step + 1) * s.batch_size]
                    lr = s.lr_at(epoch + step / steps_per_epoch)
                    if method == "vmap":
                        losses = self._vmap_step(train, idx, lr, forward, params, buffers, flat, optimizer, alive)
                    else:
                        losses = self._loop_step(train, idx, lr, alive)
                    values = losses.tolist()
                    for m, value in enumerate(values):
                        if alive[m] and not torch.isfinite(torch.tensor(value)):
                            alive[m], statuses[m] = False, "failed"
                            members[m].run.update_config(status="failed")
                            self.log(f"{members[m].run.path}: loss became {value} at epoch {epoch + 1}, "
                                     f"step {step + 1}; stopped this member (the other members go on). "
                                     f"The last good checkpoint (epoch {members[m].epoch}) is kept.")
                    loss_sums += torch.where(torch.tensor(alive, device=self.device), losses.detach(), 0.0)
                    bar.update(1)
                    bar.set_postfix_str(f"epoch {epoch + 1}/{s.epochs} loss "
                                        + " ".join(f"{v:.3f}" for v in values[:4]) + (" …" if size > 4 else ""))
                    if not any(alive):
                        break
                if not any(alive):
                    break
                train_seconds = time.perf_counter() - started
                if method == "vmap":
                    _unstack_into_members(names, params, buffers, optimizer, members, alive, lr)
                line = []
                for m, t in enumerate(members):
                    if not alive[m]:
                        continue
                    record = t.end_epoch((loss_sums[m] / steps_per_epoch).item(), lr, train_seconds, n,
                                         evals, ensemble=size, ensemble_method=method)
                    head = record["metrics"].get(t.task.headline_split, {}).get(t.task.headline_metric)
                    line.append("-" if head is None else f"{head:.3f}")
                self.epoch = epoch + 1
                bar.write(f"epoch {self.epoch}/{s.epochs}  {self.task.headline_split} "
                          f"{self.task.headline_metric} per member: {' '.join(line)}  ({train_seconds:.1f}s)")
        except (_StopRequested, KeyboardInterrupt):
            bar.close()
            for m, t in enumerate(members):
                if alive[m]:
                    t.run.update_config(status="interrupted")
            self.log(f"Interrupted after epoch {self.epoch}/{s.epochs}; each member keeps its checkpoint "
                     f"of epoch {self.epoch}.")
            return [RunResult(t.run.path, "interrupted" if alive[m] else "failed", epochs_completed=t.epoch)
                    for m, t in enumerate(members)]
        finally:
            stop.restore()
        bar.close()
        return [t.finish() if alive[m] else RunResult(t.run.path, statuses[m], epochs_completed=t.epoch)
                for m, t in enumerate(members)]

    def _vmap_step(self, train, idx, lr, forward, params, buffers, flat, optimizer, alive) -> torch.Tensor:
        s, size = self.settings, self.size
        for group in optimizer.param_groups:
            group["lr"] = lr
        batches = [train[idx[m]] for m in range(size)]
        logits = forward(params, buffers, torch.stack([b.tokens for b in batches]))
        losses = torch.stack([self.task.loss(logits[m], batches[m]) for m in range(size)])
        optimizer.zero_grad(set_to_none=True)
        losses.sum().backward()
        clip_grad_norm_per_member_(flat, s.grad_clip, size)
        optimizer.step()
        return losses.detach()

    def _loop_step(self, train, idx, lr, alive) -> torch.Tensor:
        s = self.settings
        losses = []
        for m, t in enumerate(self.trainers):
            if not alive[m]:
                losses.append(torch.tensor(float("nan"), device=self.device))
                continue
            for group in t.optimizer.param_groups:
                group["lr"] = lr
            batch = train[idx[m]]
            loss = t.task.loss(t.model(batch.tokens), batch)
            t.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if torch.isfinite(loss).item():  # as the one-by-one trainer: no step on a NaN loss
                torch.nn.utils.clip_grad_norm_(t.model.parameters(), s.grad_clip)
                t.optimizer.step()
            losses.append(loss.detach())
        return torch.stack(losses)


def clip_grad_norm_per_member_(params: Sequence[torch.Tensor], max_norm: float, size: int) -> torch.Tensor:
    """``clip_grad_norm_`` applied to each member (the leading dimension) separately.

    Member m's norm is the 2-norm of the per-tensor 2-norms of its slices, its coefficient
    ``min(1, max_norm / (norm + 1e-6))``, as torch computes them for one run."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.zeros(size)
    per_tensor = torch.stack([torch.linalg.vector_norm(g.reshape(size, -1), 2, dim=1) for g in grads])
    total = torch.linalg.vector_norm(per_tensor, 2, dim=0)                     # (size,)
    coef = torch.clamp(max_norm / (total + 1e-6), max=1.0)
    for g in grads:
        g.mul_(coef.view(size, *([1] * (g.dim() - 1))))
    return total


def _load_stacked_optimizer(optimizer: torch.optim.Optimizer, names: list[str], members: Sequence[Trainer]) -> None:
    """Stack the members' AdamW states (after a resume) into the ensemble's optimizer."""
    member_params = [dict(t.model.named_parameters()) for t in members]
    states = [[t.optimizer.state.get(p) for p in (mp[k] for k in names)] for t, mp in zip(members, member_params)]
    if all(st is None for member in states for st in member):
        return
    for i, p in enumerate(optimizer.param_groups[0]["params"]):
        per = [member[i] for member in states]
        if any(st is None for st in per):
            raise AchillesError("cannot ensemble runs whose optimizer states are partly missing")
        optimizer.state[p] = {
            "step": per[0]["step"].clone(),
            "exp_avg": torch.stack([st["exp_avg"] for st in per]).to(p.device),
            "exp_avg_sq": torch.stack([st["exp_avg_sq"] for st in per]).to(p.device),
        }


@torch.no_grad()
def _unstack_into_members(names, params, buffers, optimizer, members, alive, lr) -> None:
    """Copy each living member's slice of the stacked weights and AdamW state into its own
    module and optimizer, so its Trainer evaluates, checkpoints and resumes as a lone run."""
    stacked = optimizer.param_groups[0]["params"]
    for m, t in enumerate(members):
        if not alive[m]:
            continue
        own = dict(t.model.named_parameters())
        own_buffers = dict(t.model.named_buffers())
        for name, p in zip(names, stacked):
            own[name].copy_(params[name][m])
            state = optimizer.state.get(p)
            if state:
                t.optimizer.state[own[name]] = {"step": state["step"].clone(),
                                                "exp_avg": state["exp_avg"][m].clone(),
                                                "exp_avg_sq": state["exp_avg_sq"][m].clone()}
        for name, b in buffers.items():
            own_buffers[name].copy_(b[m])
        for group in t.optimizer.param_groups:
            group["lr"] = lr
