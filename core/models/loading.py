"""Building a model from a checkpoint, checked: a checkpoint is untrusted data.

Every loader (``load_run``, ``build_pretrained``, ``from_pretrained``, the zoo, resume) goes through
``build_checked``, which refuses a config that cannot fit in memory, weights whose header does not
match the model and an ``arch`` that is no registered architecture (loading never follows one
checkpoint to another), before the model is built or a tensor read.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from achilles.errors import AchillesError, CheckpointError
from achilles.runs.files import load_tensors
from achilles.runs.folder import model_settings, RunFolder
from achilles.runs.layout import WEIGHTS


@dataclass
class LoadedRun:
    model: torch.nn.Module
    task: Any
    config: dict[str, Any]
    path: Path


def build_from_config(config: dict[str, Any]):
    """(model, task) from a run config, weights not loaded."""
    from achilles.contract.lookup import create_architecture, rebuild_task
    from achilles.contract.provenance import require_components

    require_components(config)  # a missing plugin is named with what to install
    task = rebuild_task(config["task"], config.get("task_config", {}))
    model = create_architecture(config["arch"], **config.get("model", {}))
    return model, task


def load_run(path: str | Path, device: str | torch.device = "cpu") -> LoadedRun:
    """Rebuild model and task of a run folder and load its sha256-verified weights."""
    from achilles.contract.lookup import rebuild_task
    from achilles.models.loading import build_checked
    from achilles.contract.provenance import require_components

    run = RunFolder(path)
    config = run.read_config()
    require_components(config)  # a missing plugin is named
    task = rebuild_task(config["task"], config.get("task_config", {}))
    expected = config.get("weights_sha256")
    if not expected:
        raise CheckpointError(f"{run.path} records no sha256 for {WEIGHTS}; refusing to load unverified weights")
    # config and weights checked (limits, shapes, sha256) before anything is built: an untrusted run is data
    model = build_checked(config["arch"], config.get("model", {}), run.path / WEIGHTS, expected, what=str(run.path),
                         device=str(device))
    return LoadedRun(model, task, config, run.path)


# -- loading an untrusted checkpoint: data, never a program or a memory bomb -----------------
#: set while a checkpoint is loaded: a checkpoint's config never loads another checkpoint
_LOADING: ContextVar[str | None] = ContextVar("achilles_loading_checkpoint", default=None)


#: safetensors' dtype names of torch dtypes
_SAFETENSORS_DTYPES = {"float32": "F32", "float16": "F16", "bfloat16": "BF16", "float64": "F64", "int64": "I64",
                       "int32": "I32", "int16": "I16", "int8": "I8", "uint8": "U8", "bool": "BOOL"}


def build_architecture(arch: Any, settings: dict[str, Any], *, what: str):
    """``create_model`` of a registered architecture only: a checkpoint's ``arch`` that names a
    checkpoint (``hf-hub:``, a zoo id, a folder) or anything else unregistered is refused, so loading
    one checkpoint never resolves another."""
    from achilles.contract.lookup import create_architecture

    check_architecture_name(arch, what=what)
    return create_architecture(arch, **settings)


def check_architecture_name(arch: Any, *, what: str) -> None:
    """Refuse a checkpoint's ``arch`` that is no registered architecture (a checkpoint name included)."""
    from achilles.contract.lookup import registry

    if not isinstance(arch, str) or arch.startswith("hf-hub:") or arch not in registry("architecture"):
        raise CheckpointError(f"{what}: its config.json names architecture {arch!r}, which is no registered "
                              "architecture; a checkpoint's config never names another checkpoint (loading is "
                              "one level deep)")


def read_weights_header(path: Path) -> dict[str, tuple[str, tuple[int, ...]]]:
    """``name -> (dtype, shape)`` of a safetensors file, from its header alone (no tensor is read)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            header = {}
            for name in f.keys():
                piece = f.get_slice(name)
                header[name] = (str(piece.get_dtype()), tuple(int(n) for n in piece.get_shape()))
            return header
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path} is not a readable safetensors file ({exc})") from None


def check_weights_fit(model, header: dict[str, tuple[str, tuple[int, ...]]], *, arch: str, what: str,
                      strict: bool = True) -> None:
    """Refuse weights whose names, shapes or dtypes are not the model's (``model`` may live on the
    meta device), naming the first mismatching tensor, before a tensor is read."""
    expected = {k: (_SAFETENSORS_DTYPES.get(str(v.dtype).removeprefix("torch."), str(v.dtype)), tuple(v.shape))
                for k, v in model.state_dict().items()}
    prefix = f"the weights of {what} do not fit {arch!r} with the settings of its config.json"
    if strict:
        missing = [k for k in expected if k not in header]
        if missing:
            raise CheckpointError(f"{prefix}: tensor {missing[0]!r} is missing from the file "
                                  f"({len(missing)} missing)")
        unexpected = [k for k in header if k not in expected]
        if unexpected:
            raise CheckpointError(f"{prefix}: the file holds tensor {unexpected[0]!r}, which the model has not "
                                  f"({len(unexpected)} unexpected)")
    for name, (dtype, shape) in header.items():
        if name not in expected:
            continue
        want_dtype, want_shape = expected[name]
        if shape != want_shape:
            raise CheckpointError(f"{prefix}: tensor {name!r} has shape {list(shape)} in the file, the model "
                                  f"expects {list(want_shape)}")
        if dtype != want_dtype:
            raise CheckpointError(f"{prefix}: tensor {name!r} is {dtype} in the file, the model expects {want_dtype}")


def build_checked(arch: Any, settings: dict[str, Any], weights: Path | None, sha256: str | None, *, what: str,
                  device: str = "cpu", strict: bool = True, load_weights: bool = True):
    """The one way a checkpoint becomes a model (run folders, Hub repos, zoo entries): the config is
    checked against the memory limits train applies (``limits.check_model_config``, on the meta
    device), the weights file's header against the model built on the meta device (names, shapes,
    dtypes), and the file against ``sha256``, all before anything is allocated; only then is the
    model built and the weights copied in. ``weights=None`` builds the architecture alone (memory
    check only); ``load_weights=False`` checks the config against ``weights`` but leaves the model
    freshly initialised."""
    import torch

    from achilles.models.limits import check_model_config
    from achilles.runs.files import file_sha256

    check_architecture_name(arch, what=what)
    header = None
    if weights is not None:
        if not Path(weights).is_file():
            raise CheckpointError(f"missing weights file {weights}")
        if sha256 is not None:
            actual = file_sha256(weights)
            if actual != sha256:
                raise CheckpointError(
                    f"{weights} does not match its recorded sha256 (expected {sha256[:12]}…, got {actual[:12]}…): "
                    "the file is corrupt or was modified; refusing to load it")
        header = read_weights_header(Path(weights))
    token = _LOADING.set(what)
    try:
        check_model_config(arch, settings, what=what, device=device,
                           tensors_in_file=len(header) if header is not None and strict else None)
        if header is not None:
            try:
                with torch.device("meta"):
                    shape_model = build_architecture(arch, settings, what=what)
            except AchillesError:
                raise
            except Exception:  # cannot be built on meta: checked against the real model below
                shape_model = None
            if shape_model is not None:
                check_weights_fit(shape_model, header, arch=arch, what=what, strict=strict)
        try:
            model = build_architecture(arch, settings, what=what)
        except AchillesError:
            raise
        except Exception as exc:  # settings the factory cannot take (an overflowing size, a wrong type)
            raise CheckpointError(f"{what}: the settings of its config.json cannot build a {arch!r} model "
                                  f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None
        if header is None or not load_weights:
            return model
        if shape_model is None:
            check_weights_fit(model, header, arch=arch, what=what, strict=strict)
        state = load_tensors(weights, None)  # verified above
        missing, unexpected = model.load_state_dict(state, strict=False)
        if strict and (missing or unexpected):
            raise CheckpointError(f"the weights of {what} do not fit {arch!r} with these settings: "
                                  f"missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}")
        return model.to(device).eval()
    finally:
        _LOADING.reset(token)


def build_pretrained(folder: Path, overrides: dict[str, Any] | None = None, *, map_location: str = "cpu",
                     strict: bool = True, what: str | None = None):
    """The architecture ``folder``'s config.json names, with its weights (sha256-checked when a
    run record holds one), in eval mode; checked before anything is built (``build_checked``)."""
    from achilles.contract.provenance import require_components

    what = what or str(folder)
    arch, settings, record = model_settings(folder)
    require_components({**(record or {}), "arch": arch}, kinds=("architecture",))  # a missing plugin: what to install
    return build_checked(arch, {**settings, **(overrides or {})}, folder / WEIGHTS,
                         (record or {}).get("weights_sha256") or None, what=what, device=map_location, strict=strict)
