"""Named hook points: read or replace a model's internals by name (TransformerLens-style).

A model subclasses ``HookedModel`` and passes intermediate values through
``HookPoint`` modules. A probe then does::

    with model.hooks(read=["layers.0.ssm.matrix"], edit={"layers.1.conv.out": fn}) as cache:
        logits = model(tokens)
    S = cache["layers.0.ssm.matrix"]

``fn(value, site)`` returns the replacement value (or None to keep it).
"""

from __future__ import annotations

import fnmatch
from contextlib import contextmanager
from typing import Callable, Iterable, Iterator

import torch
from torch import nn

from achilles.errors import UnknownNameError
from achilles.models.pretrained import HubModelMixin


class HookPoint(nn.Module):
    """Identity module that marks a site. ``site`` is relative to the enclosing module's
    path (``HookPoint("conv.out")`` inside ``layers.0`` is ``layers.0.conv.out``) unless
    ``absolute=True``."""

    def __init__(self, site: str, absolute: bool = False):
        super().__init__()
        self.relative_site = site
        self.absolute = absolute
        self.site = site

    @property
    def active(self) -> bool:
        """True while a hook reads or edits this site (a block may switch to a form
        that materialises the value, e.g. the quadratic SSD for the S matrix)."""
        return bool(self._forward_hooks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def extra_repr(self) -> str:
        return self.site


class HookedModel(nn.Module, HubModelMixin):
    """Base for architectures: token ids (N, S) -> logits (N, S, V), with named sites.

    The architecture contract:

    * ``forward(tokens)`` maps a (N, S) LongTensor to logits (N, S, V);
    * ``forward(tokens, logits_mask=mask)``, with a bool ``mask`` (N, S), returns only the logits
      at ``mask.nonzero()``: shape (K, V), rows in row-major order, equal to
      ``forward(tokens)[mask]``. Training and evaluation pass the task's loss mask, so only the
      scored positions are unembedded. The parameter is optional: a model without it gets
      full logits selected for it (``achilles.models.logits_mask``);
    * ``config`` holds every setting needed to rebuild the model with
      ``achilles.create_model(arch, **config)``;
    * intermediate values pass through ``HookPoint`` modules (below); the hooks see the same
      values whatever ``logits_mask`` is.

    huggingface_hub's mixin adds ``save_pretrained``, ``push_to_hub`` and
    ``HookedModel.from_pretrained("ORG/NAME" or a folder, revision=...)`` (see ``achilles.models.pretrained``).
    """

    config: dict

    def name_hook_points(self) -> None:
        """Resolve each HookPoint's full site name; call at the end of ``__init__``."""
        for path, module in self.named_modules():
            if isinstance(module, HookPoint):
                parent = path.rsplit(".", 1)[0] if "." in path else ""
                module.site = (module.relative_site if module.absolute or not parent
                               else f"{parent}.{module.relative_site}")

    def _sites(self) -> dict[str, HookPoint]:
        return {m.site: m for m in self.modules() if isinstance(m, HookPoint)}

    def hook_points(self, pattern: str = "*") -> list[str]:
        """The site names (wildcards allowed), in forward order."""
        return [s for s in self._sites() if fnmatch.fnmatchcase(s, pattern)]

    def _resolve(self, patterns: Iterable[str]) -> list[str]:
        sites = self._sites()
        out: list[str] = []
        for pattern in patterns:
            matched = [s for s in sites if fnmatch.fnmatchcase(s, pattern)]
            if not matched:
                raise UnknownNameError(f"hook point of {type(self).__name__}", pattern, list(sites))
            out += [m for m in matched if m not in out]
        return out

    @contextmanager
    def hooks(self, read: Iterable[str] = (), edit: dict[str, Callable] | None = None,
              detach: bool = True) -> Iterator[dict[str, torch.Tensor]]:
        """Cache the values at ``read`` sites and replace values at ``edit`` sites."""
        sites = self._sites()
        cache: dict[str, torch.Tensor] = {}
        read_sites = self._resolve(read)
        edits = [(site, fn) for pattern, fn in (edit or {}).items() for site in self._resolve([pattern])]
        handles = []
        try:
            # Edits are registered first so that a read of the same site sees the edited value.
            for site, fn in edits:
                def replace(_m, _inp, out, _site=site, _fn=fn):
                    new = _fn(out, _site)
                    return out if new is None else new
                handles.append(sites[site].register_forward_hook(replace))
            for site in read_sites:
                def save(_m, _inp, out, _site=site):
                    cache[_site] = out.detach() if detach else out
                handles.append(sites[site].register_forward_hook(save))
            yield cache
        finally:
            for handle in handles:
                handle.remove()

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
