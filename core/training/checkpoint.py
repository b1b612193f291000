"""A run's epoch checkpoint: weights, AdamW state and the torch RNG, in safetensors plus
``checkpoint/state.json`` naming them (with their sha256), so a resumed run is bit-identical."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from achilles.errors import CheckpointError
from achilles.runs.files import atomic_write_json, load_tensors, read_json_or_none, save_tensors
from achilles.runs.folder import read_checkpoint_state, RunFolder, saving_failed
from achilles.runs.layout import CHECKPOINT_DIR, CHECKPOINT_STATE
from achilles.runs.ownership import claim


log = logging.getLogger("achilles.training")


def optimizer_to_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """The optimizer's per-parameter state as flat tensors, and its param groups as JSON data."""
    sd = opt.state_dict()
    tensors = {f"state.{pid}.{k}": v for pid, st in sd["state"].items() for k, v in st.items()
               if torch.is_tensor(v)}
    return tensors, {"param_groups": sd["param_groups"]}


def optimizer_from_tensors(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict,
                           model: torch.nn.Module | None = None) -> None:
    """Load the state ``optimizer_to_tensors`` saved. With ``model``, a one-group state saved
    before the no-weight-decay group existed is regrouped onto ``opt``'s groups (see ``_regroup``)."""
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("state."):
            _, pid, name = key.split(".", 2)
            state.setdefault(int(pid), {})[name] = value
    groups = [dict(group) for group in meta["param_groups"]]
    for group in groups:
        if "betas" in group:
            group["betas"] = tuple(group["betas"])
    if model is not None and len(groups) == 1 and len(opt.param_groups) > 1:
        state, groups = _regroup(opt, model, state, groups[0])
    opt.load_state_dict({"state": state, "param_groups": groups})


def _regroup(opt: torch.optim.Optimizer, model: torch.nn.Module, state: dict[int, dict], old: dict
             ) -> tuple[dict[int, dict], list[dict]]:
    """A checkpoint from before the no-weight-decay group (one AdamW group over ``model.parameters()``)
    as the state of ``opt``'s groups: every moment is kept (AdamW's moments do not depend on the
    decay), so the resume loses no work; from here on the marked parameters are not decayed."""
    params = list(model.parameters())
    if len(old["params"]) != len(params):
        raise CheckpointError(f"the checkpoint's optimizer holds {len(old['params'])} parameters, the model "
                              f"{len(params)}; train the run again with --overwrite")
    new_id = {id(p): i for i, p in enumerate(p for group in opt.param_groups for p in group["params"])}
    moved = {new_id[id(params[position])]: state[pid] for position, pid in enumerate(old["params"]) if pid in state}
    groups, first = [], 0
    for group in opt.param_groups:
        count = len(group["params"])
        groups.append({**{k: v for k, v in old.items() if k != "params"}, "weight_decay": group["weight_decay"],
                       "params": list(range(first, first + count))})
        first += count
    log.warning("resuming a checkpoint saved before parameters marked _no_weight_decay had their own AdamW group: "
                "its state is kept; from this epoch on those parameters are not decayed")
    return moved, groups


def save_checkpoint(run: RunFolder, epoch: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> str:
    """Epoch files first, then state.json naming them (a crash leaves the last complete set), then
    the run's model.safetensors and its sha256 in config.json; returns that sha256."""
    ckpt = run.path / CHECKPOINT_DIR
    tag = f"epoch-{epoch:04d}"
    claim(run.path, CHECKPOINT_DIR)
    weights = dict(model.state_dict())
    try:  # a full disk: the run is marked failed; the last complete checkpoint stays as it was
        model_sha = save_tensors(ckpt / f"{tag}.model.safetensors", weights)
        opt_tensors, opt_meta = optimizer_to_tensors(optimizer)
        opt_tensors["rng.torch"] = torch.get_rng_state()
        opt_sha = save_tensors(ckpt / f"{tag}.optimizer.safetensors", opt_tensors)
        atomic_write_json(run.path / CHECKPOINT_STATE, {
            "epoch": epoch, "model": f"{tag}.model.safetensors", "model_sha256": model_sha,
            "optimizer": f"{tag}.optimizer.safetensors", "optimizer_sha256": opt_sha, **opt_meta})
    except OSError as exc:
        named = read_json_or_none(run.path / CHECKPOINT_STATE)
        named = {named.get("model"), named.get("optimizer")} if isinstance(named, dict) else set()
        for partial in ckpt.glob(f"{tag}.*.safetensors"):  # this epoch's files, unless the last checkpoint's
            if partial.name not in named:
                partial.unlink(missing_ok=True)
        raise saving_failed(run, exc) from None
    for old in ckpt.glob("epoch-*.safetensors"):
        if not old.name.startswith(tag):
            old.unlink(missing_ok=True)
    try:
        sha = run.save_weights(weights)
    except OSError as exc:  # the checkpoint of this epoch is complete; model.safetensors is the last one
        raise saving_failed(run, exc) from None
    run.update_config(weights_sha256=sha, epochs_completed=epoch)
    return sha


def load_checkpoint(run: RunFolder, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    device: torch.device, epochs: int) -> int:
    """Restore model, optimizer and RNG from the run's checkpoint; the epoch it holds (0 if none).
    state.json is checked first (files inside checkpoint/, epoch within 0..``epochs``)."""
    state = read_checkpoint_state(run.path, epochs)
    if state is None:
        return 0
    ckpt = run.path / CHECKPOINT_DIR
    check_checkpoint_headers(run, model, ckpt / state["model"], ckpt / state["optimizer"])
    weights = load_tensors(ckpt / state["model"], state["model_sha256"])
    opt_tensors = load_tensors(ckpt / state["optimizer"], state["optimizer_sha256"])
    model.load_state_dict({k: v.to(device) for k, v in weights.items()})
    torch.set_rng_state(opt_tensors.pop("rng.torch"))
    optimizer_from_tensors(optimizer, {k: v.to(device) for k, v in opt_tensors.items()}, state, model)
    return int(state["epoch"])


def check_checkpoint_headers(run: RunFolder, model: torch.nn.Module, weights: Path, optimizer: Path) -> None:
    """Before a tensor of an epoch checkpoint is read: its weights must be the model's (names,
    shapes, dtypes; the first mismatch named) and its optimizer file no larger than the model's
    AdamW state can be (no tensor beyond the largest parameter, one RNG state), from the headers."""
    from achilles.models.loading import check_weights_fit, read_weights_header

    what = f"the checkpoint {weights.name} of {run.path}"
    check_weights_fit(model, read_weights_header(weights), arch=getattr(model, "arch_name", "?"), what=what)
    largest = max((p.numel() for p in model.parameters()), default=0)
    rng = tuple(torch.get_rng_state().shape)
    for name, (_, shape) in read_weights_header(optimizer).items():
        numel = 1
        for n in shape:
            numel *= n
        if (name == "rng.torch" and shape != rng) or (name != "rng.torch" and numel > largest):
            raise CheckpointError(f"the checkpoint {optimizer.name} of {run.path} holds tensor {name!r} of shape "
                                  f"{list(shape)}, which no AdamW state of this model has; refusing to load it "
                                  "(train the run again with --overwrite)")
