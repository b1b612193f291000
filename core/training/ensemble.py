"""Ensembled training: several runs that share every shape train as one batched model.

Cells of a sweep that differ only in seed and/or gamma (same architecture, widths, depth, task
and training settings) have parameters of identical shapes. ``EnsembleTrainer`` takes the
ordinary ``Trainer`` of each such run (from ``start_run`` or ``resume_run``) and trains them
together, keeping every run's semantics of the one-by-one trainer:

* initialisation: each member is the seeded ``create_model`` of its own run;
* data: each member trains and evaluates on its own data seed's samples (by default its run
  seed: members of different seeds are independent replicates), generated once per distinct data
  seed; member m reads its epoch in the order ``epoch_order(seed_m, epoch)``, the same batches the
  one-by-one trainer would draw;
* optimisation: AdamW on the stacked parameters is element-wise, so it is each member's AdamW,
  with the same two parameter groups (no weight decay on parameters marked ``_no_weight_decay``);
  the gradient norm is clipped **per member** (each member's own global norm, as
  ``clip_grad_norm_`` computes it for one run); the lr schedule is the profile's;
* output: one ordinary run folder per member (metrics.jsonl, checkpoints, weights, config
  with final metrics), written by the member's own ``Trainer`` (``end_epoch`` / ``finish``),
  so each member resumes, loads and probes like any run;
* epochs: the one epoch loop of ``achilles.training.epoch_loop`` (lr schedule, stop signal, evaluation,
  checkpoints, events), as for a single run; a member that becomes non-finite fails alone.

Two methods compute the members' steps:

``vmap``  ``torch.func.stack_module_state`` + ``functional_call`` under ``torch.func.vmap``: one
          forward and one backward over all members (batched matmuls). The fast path.
``loop``  each member's own module and optimizer, stepped in turn on shared data (``LoopStepper``):
          the one-by-one arithmetic exactly, for architectures whose forward ``vmap`` cannot trace.

``auto`` (the default) checks on a few samples that the vmapped forward reproduces every
member's own forward (else it uses ``loop`` and says why), then times one forward and backward
of each method on one batch and trains with the faster (benchmarks/RESULTS-sweep.md: on a CPU,
``vmap`` is about as fast as one-by-one for the Transformer and half as fast for mamba2, whose
fast CPU path is off under ``torch.func``).
"""

from __future__ import annotations

import copy
import logging
import time
from typing import Sequence

import torch
from torch.func import functional_call, stack_module_state, vmap

from achilles.training.epoch_loop import LoopStepper, RunResult, members_data, train_epochs
from achilles.errors import AchillesError, ConfigError
from achilles.models.logits_mask import accepts_logits_mask, reads_selected_logits, task_loss
from achilles.training.precision import autocast
from achilles.contract.task import Batch
from achilles.training.trainer import Trainer, make_optimizer, no_weight_decay_names

METHODS = ("auto", "vmap", "loop")

log = logging.getLogger("achilles.training")


def shape_signature(model: torch.nn.Module) -> tuple:
    """Names, shapes and dtypes of a model's parameters and buffers (equal for stackable models)."""
    return tuple((name, tuple(t.shape), str(t.dtype))
                 for name, t in list(model.named_parameters()) + list(model.named_buffers()))


def stacked_forward(models: Sequence[torch.nn.Module]):
    """(stacked parameters, stacked buffers, a base module, forward(params, buffers, tokens,
    logits_mask=None)) computing every model's forward in one vmapped call (tokens: one batch per
    model; ``logits_mask``, one (N, S) mask shared by all models, as vmap needs)."""
    params, buffers = stack_module_state(list(models))
    base = copy.deepcopy(models[0])

    def forward_one(p, b, tokens, logits_mask):
        return functional_call(base, (p, b), (tokens,), {} if logits_mask is None else {"logits_mask": logits_mask})

    batched = vmap(forward_one, in_dims=(0, 0, 0, None))

    def forward(p, b, tokens, logits_mask=None):
        return batched(p, b, tokens, logits_mask)

    return params, buffers, base, forward


def stacked_losses(task, model, forward, params, buffers, batches: Sequence[Batch]) -> torch.Tensor:
    """Each member's loss on its own batch from one vmapped forward. The members unembed the
    positions any of them scores (one mask for all), then each member's loss reads its own
    positions among those (``achilles.models.logits_mask``); full logits where the task or model needs them."""
    tokens = torch.stack([b.tokens for b in batches])
    if not (reads_selected_logits(task) and accepts_logits_mask(model)):
        logits = forward(params, buffers, tokens)
        return torch.stack([task.loss(logits[m], b) for m, b in enumerate(batches)])
    union = torch.stack([b.mask for b in batches]).any(0)
    logits = forward(params, buffers, tokens, union)                              # (members, K, V)
    return torch.stack([task.masked_loss(logits[m][b.mask[union]], b) for m, b in enumerate(batches)])


class EnsembleTrainer:
    """Train the runs of ``trainers`` together; ``fit()`` returns one ``RunResult`` per run."""

    def __init__(self, trainers: Sequence[Trainer], method: str = "auto", progress: bool | None = None):
        if method not in METHODS:
            raise ConfigError("ensemble method", f"{method!r} is not one of {', '.join(METHODS)}")
        if not trainers:
            raise AchillesError("an ensemble needs at least one run")
        self.trainers = list(trainers)
        self.progress = progress
        self._check_compatible()
        first = self.trainers[0]
        self.settings, self.task, self.device = first.settings, first.task, first.device
        self.method = method
        self.method_used: str | None = None

    @property
    def size(self) -> int:
        return len(self.trainers)

    def _check_compatible(self) -> None:
        first = self.trainers[0]
        want = (_shared(first.settings.to_dict()), first.task.name, first.task.config, str(first.device),
                first.epoch, shape_signature(first.model))
        for t in self.trainers[1:]:
            got = (_shared(t.settings.to_dict()), t.task.name, t.task.config, str(t.device), t.epoch,
                   shape_signature(t.model))
            for what, a, b in zip(("training settings", "task", "task settings", "device", "epoch",
                                   "parameter shapes"), want, got):
                if a != b:
                    raise AchillesError(f"runs {first.run.path} and {t.run.path} cannot train as one "
                                        f"ensemble: their {what} differ")

    # -- choosing the method -------------------------------------------------------------------
    def _vmap_matches(self, train: Batch) -> str | None:
        """None if the vmapped forward reproduces each member's own forward; else why not."""
        probe = train.tokens[: min(8, len(train))]
        try:
            params, buffers, base, forward = stacked_forward([t.model for t in self.trainers])
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

    def _faster_method(self, train: Batch, repeats: int = 2) -> str:
        """``vmap`` or ``loop``, whichever runs a forward and backward of one batch faster here.

        Measured, not assumed: on a GPU the batched forward wins, but on a CPU an architecture
        may have a faster path that ``torch.func`` transforms switch off (mamba2's CPU mixer)."""
        batch = train[: min(len(train), self.settings.batch_size)]
        params, buffers, base, forward = stacked_forward([t.model for t in self.trainers])
        base.train()

        def batched():
            with autocast(self.settings.precision, self.device):  # timed as it will train
                losses = stacked_losses(self.task, base, forward, params, buffers, [batch] * self.size)
            losses.float().sum().backward()

        def looped():
            for t in self.trainers:
                t.model.train()
                with autocast(self.settings.precision, self.device):
                    loss = task_loss(self.task, t.model, batch)
                loss.float().backward()

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
        log.info(f"ensemble of {self.size}: one step takes {times['vmap']:.3f}s with vmap, "
                 f"{times['loop']:.3f}s in a loop; using {choice}")
        return choice

    def choose_method(self, train: Batch) -> str:
        """The method asked for, or for ``auto`` the faster of those that reproduce each member."""
        method = self.method
        if method in ("auto", "vmap") and self.size > 1:
            why = self._vmap_matches(train)
            if why is not None:
                if method == "vmap":
                    raise AchillesError(f"ensemble method vmap is not usable here: {why}")
                log.info(f"ensemble: {why}; training the members in a loop instead")
                return "loop"
            return self._faster_method(train) if method == "auto" else "vmap"
        return "loop" if method == "auto" else method

    # -- training ------------------------------------------------------------------------------
    def fit(self) -> list[RunResult]:
        data = members_data(self.trainers, self.device)
        self.method_used = self.choose_method(data[0][0])
        stepper = VmapStepper(self.trainers) if self.method_used == "vmap" else LoopStepper(self.trainers)
        return train_epochs(self.trainers, stepper, data, progress=self.progress)


class VmapStepper:
    """All members in one vmapped forward and backward, with AdamW on the stacked parameters
    (element-wise, so each member's own AdamW) and the gradient norm clipped per member."""

    method = "vmap"

    def __init__(self, members: Sequence[Trainer]):
        self.members = list(members)
        s = self.members[0].settings
        self.params, self.buffers, self.base, self.forward = stacked_forward([t.model for t in self.members])
        self.names = list(self.params)
        self.flat = [self.params[k] for k in self.names]
        self.optimizer = make_optimizer(list(self.params.items()), no_weight_decay_names(self.members[0].model), s)
        load_stacked_optimizer(self.optimizer, self.names, self.members, self.params)
        self.base.train()
        self.lr = s.lr_start

    def step(self, batches: list[Batch], lr: float, alive: list[bool]) -> torch.Tensor:
        size, task = len(self.members), self.members[0].task
        self.lr = lr
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        with autocast(self.members[0].settings.precision, batches[0].tokens.device):  # bf16: the forward only
            losses = stacked_losses(task, self.base, self.forward, self.params, self.buffers, batches)
        losses = losses.float()  # fp32 loss for backward, per-member clipping and AdamW on fp32 weights
        self.optimizer.zero_grad(set_to_none=True)
        losses.sum().backward()
        clip_grad_norm_per_member_(self.flat, self.members[0].settings.grad_clip, size)
        self.optimizer.step()
        return losses.detach()

    @torch.no_grad()
    def sync(self, alive: list[bool]) -> None:
        """Copy each living member's slice of the stacked weights and AdamW state into its own
        module and optimizer, so its Trainer evaluates, checkpoints and resumes as a lone run."""
        for m, t in enumerate(self.members):
            if not alive[m]:
                continue
            own = dict(t.model.named_parameters())
            own_buffers = dict(t.model.named_buffers())
            for name, p in self.params.items():
                own[name].copy_(p[m])
                state = self.optimizer.state.get(p)
                if state:
                    t.optimizer.state[own[name]] = {"step": state["step"].clone(),
                                                    "exp_avg": state["exp_avg"][m].clone(),
                                                    "exp_avg_sq": state["exp_avg_sq"][m].clone()}
            for name, b in self.buffers.items():
                own_buffers[name].copy_(b[m])
            for group in t.optimizer.param_groups:
                group["lr"] = self.lr


def _shared(settings: dict) -> dict:
    """The training settings members must share: all but the data seed (each member has its own data)."""
    return {k: v for k, v in settings.items() if k != "data_seed"}


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


def load_stacked_optimizer(optimizer: torch.optim.Optimizer, names: list[str], members: Sequence[Trainer],
                           stacked: dict[str, torch.Tensor]) -> None:
    """Stack the members' AdamW states (after a resume) into the ensemble's optimizer, whose
    parameters are ``stacked`` (by name; the groups may hold them in any order)."""
    member_params = [dict(t.model.named_parameters()) for t in members]
    states = [[t.optimizer.state.get(p) for p in (mp[k] for k in names)] for t, mp in zip(members, member_params)]
    if all(st is None for member in states for st in member):
        return
    index = {id(p): i for i, p in enumerate(stacked[k] for k in names)}
    for p in (p for group in optimizer.param_groups for p in group["params"]):
        per = [member[index[id(p)]] for member in states]
        if any(st is None for st in per):
            raise AchillesError("cannot ensemble runs whose optimizer states are partly missing")
        optimizer.state[p] = {
            "step": per[0]["step"].clone(),
            "exp_avg": torch.stack([st["exp_avg"] for st in per]).to(p.device),
            "exp_avg_sq": torch.stack([st["exp_avg_sq"] for st in per]).to(p.device),
        }
