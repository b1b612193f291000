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

from dataclasses import asdict, is_dataclass
import json
import os
from pathlib import Path
from typing import Any

from huggingface_hub import PyTorchModelHubMixin

from achilles.errors import CheckpointError
from achilles.models.loading import build_pretrained
from achilles.runs.files import atomic_write_json, save_tensors
from achilles.runs.folder import model_settings
from achilles.runs.layout import CONFIG, MODEL_CONFIG_KEYS, RECORD, RUN_FORMAT, RUN_FORMAT_V1, WEIGHTS

LIBRARY_NAME = "achilles"

MODEL_CARD = """---
{{ card_data }}
---

# {{ arch }}

An achilles `{{ arch }}` model saved with `save_pretrained`. `config.json` holds the architecture's
name and its settings at the top level; `model.safetensors` the weights (safetensors only).

```python
from achilles import HookedModel
from achilles.models.loading import build_pretrained
from achilles.models.loading import build_pretrained

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

    from achilles.models.hub_refs import HubRef, hub_errors

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
        from achilles.models.hub_refs import HubRef, check_repo_id, hub_errors, is_hub_ref, parse_hub_ref

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


