"""``achilles.create_model``: a model by name, timm-style, whether the name is a registered
architecture or a checkpoint. It sits above every folder because a checkpoint name reaches the zoo
(``achilles.zoo.pull``), while building an architecture needs only the plugin contract."""

from __future__ import annotations

from typing import Any

from achilles.contract.lookup import create_architecture, registry
from achilles.zoo.pull import create_pretrained


def create_model(name: str, pretrained: bool = False, **config: Any):
    """Build architecture ``name`` with ``config`` (e.g. ``n_layers=2, d_model=128``).

    ``name`` may also be a checkpoint, timm-style: ``hf-hub:ORG/NAME[@REV]``, a zoo id (see
    ``list_pretrained``) or a model folder; ``pretrained=True`` then loads its weights (sha256-checked),
    else builds its architecture with its settings, freshly initialised. ``config`` overrides settings."""
    if pretrained or name.startswith("hf-hub:") or name not in registry("architecture"):
        model = create_pretrained(name, pretrained, **config)
        if model is not None:
            return model
    return create_architecture(name, **config)
