"""The Transformer of the Achilles' Heel paper (appendix E.2) and its conv-Transformer (§4.3).

One pre-norm layer, for the residual stream h (N, S, d_model)::

    q, k, v   = qkv_proj(LayerNorm(h))     q, k: d_model, v: v_expand * d_model (= 2 d_model)
    [conv-transformer: q, k, v = SiLU(Conv1d(q, k, v)), depthwise causal, width 4]   -> conv.out
                                                                                      -> attn.q/k/v
    P         = softmax(q k^T / sqrt(d_head) + causal mask)                            -> attn.scores
    attn      = o_proj(P v)                                                            -> attn.out
    mlp       = W2 SiLU(W1 LayerNorm(h + attn))       hidden d_ff = d_model            -> mlp.out
    h        <- h + (attn + mlp)                                                       -> out, resid.{i}

Choices where the paper is silent (each a setting in ``model.config``):

* Learned absolute positional encoding (``pos_enc=True``) for both; LayerNorm (Fig. 1's "LN")
  with eps 1e-5; no biases in the linear maps (like the Mamba2 block); untied unembedding.
* conv-Transformer: the convolution mirrors Mamba's, which runs on the output of the input
  projection (x, B, C) before the SSM: here it runs on the projected q, k, v (one depthwise
  causal conv over the 4 d_model channels, then SiLU), so Q, K and V are "already mixed"
  representations exactly as B, C and X are in Mamba. ``layers.{i}.conv.out`` holds the
  concatenation (q, k, v) after the nonlinearity.
* Attention runs through ``scaled_dot_product_attention``; when ``layers.{i}.attn.scores`` is
  hooked it is computed explicitly so that reading or editing the probabilities is exact.
* Init: every weight with two or more dimensions by the init rate gamma; LayerNorm and the conv
  bias keep PyTorch's defaults.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from achilles import HookPoint, ModelConfig, check_int, model_factory

from . import fused
from .common import TokenModel, check_backend, check_choice, presets, require
from .ops import causal_conv, functorch_active, make_norm

__all__ = ["ARCHITECTURES", "TransformerConfig", "TransformerLayer", "TransformerModel", "VARIANTS",
           "build_transformer"]


class TransformerLayer(nn.Module):
    """Pre-norm attention + SiLU FFN. Sites (relative to ``layers.{i}``): [conv.out], attn.q,
    attn.k, attn.v, attn.scores, attn.out, mlp.out, out; and ``resid.{i}``."""

    def __init__(self, config: dict, index: int):
        super().__init__()
        c = config
        d, self.n_heads = c["d_model"], c["n_heads"]
        self.d_qk, self.d_v = d, c["v_expand"] * d
        d_ff = c["d_ff"] or d
        self.backend = c["backend"]
        self.scale = 1.0 / math.sqrt(self.d_qk // self.n_heads)
        self.norm1 = make_norm(c["norm"], d, c["norm_eps"])
        self.qkv_proj = nn.Linear(d, 2 * self.d_qk + self.d_v, bias=False)
        self.qkv_conv = c["qkv_conv"]
        if self.qkv_conv:
            channels, width = 2 * self.d_qk + self.d_v, c["conv_width"]
            self.conv_weight = nn.Parameter(torch.empty(channels, width))  # gamma init, fan-in K
            bound = 1 / math.sqrt(width)
            self.conv_bias = nn.Parameter(torch.empty(channels).uniform_(-bound, bound))
            self.hook_conv = HookPoint("conv.out")
        self.hook_q = HookPoint("attn.q")
        self.hook_k = HookPoint("attn.k")
        self.hook_v = HookPoint("attn.v")
        self.hook_scores = HookPoint("attn.scores")
        self.o_proj = nn.Linear(self.d_v, d, bias=False)
        self.hook_attn_out = HookPoint("attn.out")
        self.norm2 = make_norm(c["norm"], d, c["norm_eps"])
        self.ff_in = nn.Linear(d, d_ff, bias=False)
        self.ff_out = nn.Linear(d_ff, d, bias=False)
        self.hook_mlp_out = HookPoint("mlp.out")
        self.hook_out = HookPoint("out")
        self.hook_resid = HookPoint(f"resid.{index}", absolute=True)
        self._hook_list = [m for m in self.modules() if isinstance(m, HookPoint)]

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        n, length, _ = h.shape
        hooked = any(hp.active for hp in self._hook_list)
        use_fused = fused.use_fused(self.backend, h, hooked, functorch_active())
        qkv = self.qkv_proj(self.norm1(h))
        if self.qkv_conv:
            conv_fn = fused.causal_conv if use_fused else causal_conv
            qkv = self.hook_conv(conv_fn(qkv, self.conv_weight, self.conv_bias, silu=True))
        q, k, v = torch.split(qkv, [self.d_qk, self.d_qk, self.d_v], dim=-1)
        q, k, v = self.hook_q(q), self.hook_k(k), self.hook_v(v)
        heads = self.n_heads
        q = q.reshape(n, length, heads, -1).transpose(1, 2)
        k = k.reshape(n, length, heads, -1).transpose(1, 2)
        v = v.reshape(n, length, heads, -1).transpose(1, 2)
        if self.hook_scores.active:
            logits = torch.matmul(q, k.transpose(-1, -2)) * self.scale
            causal = torch.ones(length, length, dtype=torch.bool, device=h.device).tril_()
            scores = self.hook_scores(torch.softmax(logits.masked_fill(~causal, float("-inf")), dim=-1))
            a = torch.matmul(scores, v)
        elif use_fused:
            a = fused.attention(q, k, v, self.scale)
        else:
            a = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=self.scale)
        attn = self.hook_attn_out(self.o_proj(a.transpose(1, 2).reshape(n, length, self.d_v)))
        mlp = self.hook_mlp_out(self.ff_out(F.silu(self.ff_in(self.norm2(h + attn)))))
        return self.hook_resid(h + self.hook_out(attn + mlp))


class TransformerModel(TokenModel):
    """Transformer language model: embedding + positional encoding -> layers -> LayerNorm -> unembed."""

    def __init__(self, config: dict):
        layers = [TransformerLayer(config, i) for i in range(config["n_layers"])]
        super().__init__(config, layers, config["norm"], config["norm_eps"])
        self.init_weights(config["gamma"])
        self.name_hook_points()

    def conv_kernels(self) -> list[torch.Tensor]:
        """Per layer, the q/k/v convolution's kernel (channels = 4 d_model, width); [] without one."""
        return [layer.conv_weight.detach().clone() for layer in self.layers if layer.qkv_conv]


@dataclass
class TransformerConfig(ModelConfig):
    """Transformer / conv-Transformer; every setting lands in ``model.config``. See the module docstring."""

    n_heads: int = 1
    v_expand: int = 2
    d_ff: int | None = None
    pos_enc: bool = True
    norm: str = "layernorm"
    norm_eps: float = 1e-5
    qkv_conv: bool = False
    conv_width: int = 4

    def validate(self) -> None:
        super().validate()
        check_backend(self.backend)
        check_int("n_heads", self.n_heads, minimum=1)
        require(self.d_model % self.n_heads == 0, "n_heads",
                f"{self.n_heads} heads do not divide the query/key dimension d_model = {self.d_model}")
        check_int("v_expand", self.v_expand, minimum=1)
        if self.d_ff is not None:
            check_int("d_ff", self.d_ff, minimum=1)
        require(isinstance(self.pos_enc, bool), "pos_enc", f"must be true or false, got {self.pos_enc!r}")
        check_choice(self.norm, "norm", ("layernorm", "rmsnorm"))
        require(self.norm_eps > 0, "norm_eps", f"must be > 0, got {self.norm_eps!r}")
        require(isinstance(self.qkv_conv, bool), "qkv_conv", f"must be true or false, got {self.qkv_conv!r}")
        check_int("conv_width", self.conv_width, minimum=1)


build_transformer = model_factory(TransformerConfig, TransformerModel)


VARIANTS: dict[str, tuple[dict, str]] = {
    "transformer": ({}, "Transformer of appendix E.2: single head, SiLU FFN (hidden d_model), v dim 2*d_model"),
    "conv-transformer": ({"qkv_conv": True},
                         "Transformer with a nonlinear causal conv on Q, K, V, mirroring Mamba's (§4.3)"),
}

#: tags of these architectures on model cards and the Hub
FAMILY_TAGS = ("transformer",)
ARCHITECTURES = presets(build_transformer, VARIANTS)
