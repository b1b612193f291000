"""Hugging Face conventions for achilles models, through huggingface_hub's ``PyTorchModelHubMixin``.

Every ``HookedModel`` gets the mixin's ``save_pretrained``, ``push_to_hub`` and
``from_pretrained``; this module fills in the three methods the mixin leaves to a library
(``_save_pretrained``, ``_from_pretrained``, the card) so that:

- a saved model is a folder with ``config.json`` (``format``, ``arch`` and the model's settings
  at the top level, the layout of a run folder's config.json) and ``model.safetensors``;
- ``HookedModel.from_pretrained("ORG/NAME" | "hf-hub:ORG/NAME@REV" | folder, revision=...)``
  rebuilds the registered architecture the config names and loads the weights, checked against
  the sha256 of the run record when the folder or repository has one (``run.json``: runs pushed
  with ``achilles push`` or ``zoo publish``); a concrete class (``Mamba2Model.from_pretrained``)
  also checks that the checkpoint is one of its own;
- ``achilles.create_model("hf-hub:ORG/NAME" | ZOO_ID, pretrained=True)`` does the same, timm-style.

A checkpoint is untrusted data: every loader goes through ``build_checked``, which refuses a
config that cannot fit in memory, weights whose header does not match the model, and an ``arch``
that is no registered architecture (loading never follows one checkpoint to another), before the
model is built or a tensor read.
"""

from __future__ import annotations

import json
import os
from contextvars import ContextVar
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

from huggingface_hub import PyTorchModelHubMixin

from achilles.errors import AchillesError, CheckpointError
from achilles.runs.folder import (CONFIG, MODEL_CONFIG_KEYS, RECORD, RUN_FORMAT, RUN_FORMAT_V1, WEIGHTS, atomic_write_json,
                   load_tensors, model_settings, save_tensors)

LIBRARY_NAME = "achilles"

MODEL_CARD = """---
{{ card_data }}
---

# {{ arch }}

An achilles `{{ arch }}` model saved with `save_pretrained`. `config.json` holds the architecture's
name and its settings at the top level; `model.safetensors` the weights (safetensors only).

```python
from achilles import HookedModel

model = HookedModel.from_pretrained("{{ repo_id | default('path/to/this/folder', true) }}")
```

This card describes the model alone. A run published with `achilles push` or `achilles zoo publish`
carries its task, training settings, results and probes in its card and `run.json`.
"""


def _jsonable(config: Any) -> dict[str, Any]:
    """The model's settings as a plain dict (``model.config`` may be a dict or a dataclass)."""
    settings = asdict(config) if is_dataclass(config) else dict(config or {})
    return {k: list(v) if isinstance(v, tuple) else v for k, v in settings.items()}


def _holds_a_run(folder: Path) -> bool:
    if (folder / RECORD).is_file():
        return True
    try:
        return json.loads((folder / CONFIG).read_text()).get("format") == RUN_FORMAT_V1
    except (OSError, ValueError, AttributeError):
        return False


def fetch_model_folder(repo_id: str, revision: str | None = None, *, cache_dir: str | Path | None = None,
                       force_download: bool = False, local_files_only: bool = False,
                       token: str | bool | None = None, weights: bool = True) -> Path:
    """A Hub model's config.json (+ run.json) and, with ``weights``, model.safetensors, through the
    Hugging Face cache; its snapshot folder."""
    from huggingface_hub import snapshot_download

    from achilles.zoo.hub import HubRef, hub_errors

    ref = HubRef(repo_id, revision)
    patterns = [CONFIG, RECORD] + ([WEIGHTS] if weights else [])
    with hub_errors("download", ref):
        folder = Path(snapshot_download(repo_id, revision=revision, repo_type="model", allow_patterns=patterns,
                                        cache_dir=cache_dir, force_download=force_download,
                                        local_files_only=local_files_only, token=token))
    for needed in [CONFIG] + ([WEIGHTS] if weights else []):
        if not (folder / needed).is_file():
            found = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
            raise CheckpointError(f"{ref} is not an achilles model: it has no {needed} "
                                  f"(found: {', '.join(found) or 'nothing'})")
    return folder


class HubModelMixin(PyTorchModelHubMixin, library_name=LIBRARY_NAME, license="mit", tags=[LIBRARY_NAME],
                    model_card_template=MODEL_CARD):
    """What ``HookedModel`` adds to huggingface_hub's ``PyTorchModelHubMixin``."""

    def _save_pretrained(self, save_directory: Path) -> None:
        arch = getattr(self, "arch_name", None)
        if not arch:
            raise CheckpointError(f"cannot save this {type(self).__name__}: it was not built by "
                                  "achilles.create_model, so the architecture it belongs to is unknown")
        settings = _jsonable(getattr(self, "config", None))
        clash = [k for k in MODEL_CONFIG_KEYS if k in settings]
        if clash:
            raise CheckpointError(f"model setting {clash[0]!r} clashes with a reserved key of {CONFIG}")
        save_tensors(Path(save_directory) / WEIGHTS, self.state_dict(), metadata={"format": "pt"})
        atomic_write_json(Path(save_directory) / CONFIG, {"format": RUN_FORMAT, "arch": arch, **settings})

    def save_pretrained(self, save_directory: str | Path, **kwargs: Any):
        """Save config.json (architecture and settings at the top level), model.safetensors and a
        card into ``save_directory``; refuses a run folder, whose record it would overwrite."""
        if _holds_a_run(Path(save_directory)):
            raise CheckpointError(f"{save_directory} holds a training run; save_pretrained would overwrite its "
                                  "record and weights: save into another folder")
        return super().save_pretrained(save_directory, **kwargs)

    def generate_model_card(self, *args: Any, **kwargs: Any):
        from achilles.contract.declarations import arch_tags

        arch = getattr(self, "arch_name", None) or type(self).__name__
        kwargs.setdefault("arch", arch)
        card = super().generate_model_card(*args, **kwargs)
        card.data.tags = sorted(set(card.data.tags or []) | {arch, *arch_tags(arch)})
        return card

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | Path, *, revision: str | None = None,
                        **kwargs: Any):
        """Load a model saved by achilles: a Hub id ``ORG/NAME`` (or ``hf-hub:ORG/NAME@REV``) at
        ``revision``, or a local folder (a run folder or a ``save_pretrained`` folder). Takes
        huggingface_hub's ``cache_dir``, ``token``, ``force_download``, ``local_files_only``, plus
        ``map_location`` and model settings to override. Returns the model in eval mode."""
        from achilles.zoo.hub import HubRef, check_repo_id, hub_errors, is_hub_ref, parse_hub_ref

        name = str(pretrained_model_name_or_path)
        if is_hub_ref(name):
            ref = parse_hub_ref(name)
            if revision is not None and ref.revision not in (None, revision):
                raise CheckpointError(f"{name} names revision {ref.revision!r} but revision={revision!r} "
                                      "was passed too; give one")
            name, revision = ref.repo_id, revision or ref.revision
        elif os.path.isdir(name):
            model_settings(name)  # says what the folder holds if it is not an achilles model
        elif os.path.exists(name) or name.startswith((".", "/", "~")):
            raise CheckpointError(f"no model folder at {name}")
        else:
            check_repo_id(name)
        with hub_errors("load", HubRef(name, revision)):
            return super().from_pretrained(name, revision=revision, **kwargs)

    @classmethod
    def _from_pretrained(cls, *, model_id: str, revision: str | None, cache_dir: str | Path | None,
                         force_download: bool, local_files_only: bool, token: str | bool | None,
                         config: dict[str, Any] | None = None, map_location: str = "cpu", strict: bool = True,
                         **model_kwargs: Any):
        if os.path.isdir(model_id):
            folder = Path(model_id)
        else:
            folder = fetch_model_folder(model_id, revision, cache_dir=cache_dir, force_download=force_download,
                                        local_files_only=local_files_only, token=token)
        # The mixin passes config.json's entries back as keyword arguments; only the others override.
        raw = config if isinstance(config, dict) else {}
        overrides = {k: v for k, v in model_kwargs.items()
                     if k not in MODEL_CONFIG_KEYS and not (k in raw and raw[k] == v)}
        model = build_pretrained(folder, overrides, map_location=map_location, strict=strict, what=model_id)
        if not isinstance(model, cls):
            raise CheckpointError(f"{model_id} holds a {getattr(model, 'arch_name', '?')!r} model "
                                  f"({type(model).__name__}), not a {cls.__name__}")
        return model


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
    from achilles.contract.lookup import create_model

    check_architecture_name(arch, what=what)
    return create_model(arch, **settings)


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
    from achilles.runs.folder import file_sha256

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


def create_pretrained(name: str, pretrained: bool = False, **overrides: Any):
    """``achilles.create_model`` for a checkpoint: ``hf-hub:ORG/NAME[@REV]``, a zoo id or a model
    folder. With ``pretrained`` the weights are loaded; without, the architecture is built with the
    checkpoint's settings and freshly initialised (timm's behaviour)."""
    from achilles.zoo.hub import is_hub_ref, parse_hub_ref
    from achilles.zoo.index import names_local_folder

    outer = _LOADING.get()
    if outer is not None:
        raise CheckpointError(f"{outer}: loading it would load the checkpoint {name!r} too; a checkpoint's config "
                              "never names another checkpoint (loading is one level deep)")
    if is_hub_ref(name):
        ref = parse_hub_ref(name)
        if pretrained:
            from achilles.models.hook_points import HookedModel

            return HookedModel.from_pretrained(ref.repo_id, revision=ref.revision, **overrides)
        folder = fetch_model_folder(ref.repo_id, ref.revision, weights=False)
    elif os.path.isdir(name) and names_local_folder(name):  # a zoo id is never shadowed by a folder
        folder = Path(name)
    else:
        from achilles.zoo.index import list_pretrained, pull, zoo_index

        if name not in zoo_index().entries:
            if not pretrained:
                return None  # not a checkpoint name: the caller reports the unknown architecture
            known = list_pretrained(f"{name}.*")
            raise CheckpointError(f"no checkpoint named {name!r}: pretrained=True takes a zoo id or hf-hub:ORG/NAME"
                                  + (f" (zoo ids of {name}: {', '.join(known[:5])})" if known else
                                     " (achilles.list_pretrained() lists the zoo)"))
        folder = pull(name).path
    if pretrained:
        return build_pretrained(folder, overrides, what=name)
    arch, settings, record = model_settings(folder)
    from achilles.contract.provenance import require_components

    require_components({**(record or {}), "arch": arch}, kinds=("architecture",))
    # without the weights: the config is still checked against them when they are here (a local folder, a zoo
    # entry), so that a config describing another model than its own weights is refused before building it
    weights = folder / WEIGHTS if (folder / WEIGHTS).is_file() else None
    return build_checked(arch, {**settings, **overrides}, weights, (record or {}).get("weights_sha256") or None,
                         what=name, load_weights=False)
