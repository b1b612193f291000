"""What every first-party architecture is built from: the config checks and the base model
(embedding, layers, final norm, unembedding). The tensor primitives are in ``ops.py``."""

from __future__ import annotations

from functools import partial
from typing import Any, Callable

import torch
from torch import nn

from achilles import ConfigError, HookedModel, HookPoint, init_gamma_

from . import fused
from .ops import make_norm

BACKENDS = ("auto", "torch", "fused")


# -- config checks ---------------------------------------------------------------------------
def require(ok: bool, setting: str, why: str) -> None:
    """Raise ``ConfigError(setting, why)`` unless ``ok``."""
    if not ok:
        raise ConfigError(setting, why)


def check_choice(value: Any, setting: str, choices: tuple[str, ...]) -> str:
    require(value in choices, setting, f"must be one of {', '.join(map(repr, choices))}, got {value!r}")
    return value


def check_backend(backend: str) -> None:
    check_choice(backend, "backend", BACKENDS)
    if backend == "fused":
        fused.require_fused()


def presets(build: Callable[..., Any], variants: dict[str, tuple[dict, str]]) -> dict[str, tuple[Callable, str]]:
    """name -> (factory, description): each variant is ``build`` with its settings as new defaults.
    The package registers the ``ARCHITECTURES`` of every module of it, so a new architecture
    module needs no list kept by hand."""
    return {name: (partial(build, **settings) if settings else build, description)
            for name, (settings, description) in variants.items()}


# -- base model ------------------------------------------------------------------------------
class TokenModel(HookedModel):
    """Token embedding (+ learned absolute positional encoding) -> layers -> final norm -> unembed.

    The learned encoding (``pos_enc``; a config without that setting has none) is a table of
    ``max_len`` rows, so only it limits the sequence length.

    Every layer maps the residual stream (N, S, d_model) to the next one and owns its hook points.
    Sites: ``embed`` (embedding + positional encoding), the layers' own sites, ``resid.{i}``.
    The unembedding is not tied to the embedding (the paper's init rate applies to each weight).
    """

    def __init__(self, config: dict, layers: list[nn.Module], norm: str, norm_eps: float):
        super().__init__()
        self.config = config
        d_model = config["d_model"]
        self.embed = nn.Embedding(config["vocab_size"], d_model)
        self.pos_embed = nn.Embedding(config["max_len"], d_model) if config.get("pos_enc") else None
        self.hook_embed = HookPoint("embed", absolute=True)
        self.layers = nn.ModuleList(layers)
        self.final_norm = make_norm(norm, d_model, norm_eps)
        self.unembed = nn.Linear(d_model, config["vocab_size"], bias=False)

    def init_weights(self, gamma: float) -> None:
        """Every weight W in R^{d1 x d2} ~ N(0, (1/d1^gamma)^2), drawn from torch's global RNG
        (core.initialization.init_gamma_); 1-D parameters keep their own defaults."""
        init_gamma_(self, gamma)

    def embed_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        if tokens.dim() != 2:
            raise ValueError(f"tokens must be a (batch, seq) LongTensor, got shape {tuple(tokens.shape)}")
        h = self.embed(tokens)
        if self.pos_embed is not None:
            length = tokens.shape[1]
            if length > self.config["max_len"]:
                raise ConfigError("max_len", f"sequence length {length} exceeds the positional "
                                  f"encoding capacity max_len={self.config['max_len']}")
            h = h + self.pos_embed.weight[:length]
        return self.hook_embed(h)

    def forward(self, tokens: torch.Tensor, logits_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (N, S, V); with ``logits_mask`` (N, S) bool, only the rows at its true
        positions, (K, V) in row-major order (the final norm and unembedding skip the rest)."""
        h = self.embed_tokens(tokens)
        for layer in self.layers:
            h = layer(h)
        if logits_mask is not None:
            if logits_mask.shape != tokens.shape or logits_mask.dtype != torch.bool:
                raise ValueError(f"logits_mask must be a bool tensor shaped like tokens {tuple(tokens.shape)}, "
                                 f"got {logits_mask.dtype} {tuple(logits_mask.shape)}")
            h = h[logits_mask]
        return self.unembed_residual(h)

    def unembed_residual(self, resid: torch.Tensor) -> torch.Tensor:
        """Final norm + unembedding of a residual-stream tensor (..., d_model) -> logits (logit lens)."""
        return self.unembed(self.final_norm(resid))
