"""The Transformer of the Achilles' Heel paper (appendix E.2), its conv-Transformer (§4.3), and
the same block with rotary positions (``transformer-rope``) or none (``transformer-nope``).

One pre-norm layer, for the residual stream h (N, S, d_model)::

    q, k, v   = qkv_proj(LayerNorm(h))     q, k: d_model, v: v_expand * d_model (= 2 d_model)
    [conv-transformer: q, k, v = SiLU(Conv1d(q, k, v)), depthwise causal, width 4]   -> conv.out
                                                                                      -> attn.q/k/v
    [transformer-rope: q, k = RoPE(q), RoPE(k), per head, after the attn.q/k hook points]
    P         = softmax(q k^T / sqrt(d_head) + causal mask)                            -> attn.scores
    attn      = o_proj(P v)                                                            -> attn.out
    mlp       = W2 SiLU(W1 LayerNorm(h + attn))       hidden d_ff = d_model            -> mlp.out
    h        <- h + (attn + mlp)                                                       -> out, resid.{i}

Choices where the paper is silent (each a setting in ``model.config``):

* Learned absolute positional encoding (``pos_enc=True``) for both; LayerNorm (Fig. 1's "LN")
  with eps 1e-5; no biases in the linear maps (like the Mamba2 block); untied unembedding.
* Positional scheme, one per registered name (each has its own settings, so a setting of another
  scheme, e.g. ``rope_base`` on ``transformer``, is refused as unknown, naming the architecture):
  ``transformer``/``conv-transformer``: learned absolute positions added to the embedding
  (``pos_enc``; a table of ``max_len`` rows, so no longer sequence is accepted);
  ``transformer-rope``: rotary embeddings on queries and keys, GPT-NeoX/Llama's "rotate half"
  convention (``rope_base`` 10000, ``rope_fraction`` of each head's dims rotated, the first ones);
  ``transformer-nope``: none at all, positions only through the causal mask. Neither of the last
  two has a position table: they take sequences of any length (``max_len`` is only recorded).
  They are the attention controls for positions and lengths outside training (MQAR placements,
  COPY beyond the trained length), which learned absolute positions cannot represent.
* Rotary: ``attn.q``/``attn.k`` hold the projections before the rotation (as TransformerLens's
  ``hook_q``); ``attn.scores`` is computed from the rotated ones. Positions count from 0.
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
import numbers
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from achilles import HookPoint, ModelConfig, check_int, model_factory

from . import fused
from .common import TokenModel, check_backend, check_choice, presets, require
from .ops import causal_conv, functorch_active, make_norm

__all__ = ["ARCHITECTURES", "AttentionConfig", "NoPositionTransformerConfig", "POSITION_VARIANTS", "RotaryEmbedding",
           "RotaryTransformerConfig", "TransformerConfig", "TransformerLayer", "TransformerModel", "VARIANTS",
           "build_transformer", "build_transformer_nope", "build_transformer_rope", "position_scheme", "rotary_dims"]


def position_scheme(config: dict) -> str:
    """``"rope"``, ``"learned"`` or ``"none"``: read from the settings a config holds (a rotary
    config has ``rope_base``; a learned one ``pos_enc``), so a saved config rebuilds its scheme."""
    if "rope_base" in config:
        return "rope"
    return "learned" if config.get("pos_enc") else "none"


class RotaryEmbedding(nn.Module):
    """Rotary position embedding (Su et al.; GPT-NeoX's and Llama's "rotate half" layout): the
    first ``dims`` channels of each head, as ``dims/2`` pairs (i, i + dims/2), turn by angle
    ``t * base^(-2i/dims)`` at position t; the rest pass unchanged. No parameters, no buffers:
    the angles are computed for the length at hand (float32, float64 for a float64 model)."""

    def __init__(self, dims: int, base: float):
        super().__init__()
        self.dims, self.base = dims, float(base)

    def cos_sin(self, length: int, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """(length, dims) cosines and sines, in ``dtype``."""
        work = torch.float64 if dtype == torch.float64 else torch.float32
        inv_freq = 1.0 / (self.base ** (torch.arange(0, self.dims, 2, device=device, dtype=work) / self.dims))
        angles = torch.arange(length, device=device, dtype=work)[:, None] * inv_freq
        angles = torch.cat((angles, angles), dim=-1)
        return angles.cos().to(dtype), angles.sin().to(dtype)

    def forward(self, q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """q, k: (N, heads, S, d_head) -> rotated q, k."""
        cos, sin = self.cos_sin(q.shape[-2], q.device, q.dtype)
        return self._rotate(q, cos, sin), self._rotate(k, cos, sin)

    def _rotate(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        d = self.dims
        rot, rest = x[..., :d], x[..., d:]
        half = d // 2
        turned = torch.cat((-rot[..., half:], rot[..., :half]), dim=-1)
        out = rot * cos + turned * sin
        return torch.cat((out, rest), dim=-1) if rest.shape[-1] else out


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
        self.rotary = None
        if position_scheme(c) == "rope":
            self.rotary = RotaryEmbedding(rotary_dims(c), c["rope_base"])
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
        attn = self.hook_attn_out(self.attention(self.norm1(h)))
        mlp = self.hook_mlp_out(self.ff_out(F.silu(self.ff_in(self.norm2(h + attn)))))
        return self.hook_resid(h + self.hook_out(attn + mlp))

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """Causal self-attention of the normalised stream x (N, S, d_model): o_proj(P v), before
        the ``attn.out`` hook point."""
        n, length, _ = x.shape
        hooked = any(hp.active for hp in self._hook_list)
        use_fused = fused.use_fused(self.backend, x, hooked, functorch_active())
        qkv = self.qkv_proj(x)
        if self.qkv_conv:
            conv_fn = fused.causal_conv if use_fused else causal_conv
            qkv = self.hook_conv(conv_fn(qkv, self.conv_weight, self.conv_bias, silu=True))
        q, k, v = torch.split(qkv, [self.d_qk, self.d_qk, self.d_v], dim=-1)
        q, k, v = self.hook_q(q), self.hook_k(k), self.hook_v(v)
        heads = self.n_heads
        q = q.reshape(n, length, heads, -1).transpose(1, 2)
        k = k.reshape(n, length, heads, -1).transpose(1, 2)
        v = v.reshape(n, length, heads, -1).transpose(1, 2)
        if self.rotary is not None:
            q, k = self.rotary(q, k)
        if self.hook_scores.active:
            logits = torch.matmul(q, k.transpose(-1, -2)) * self.scale
            causal = torch.ones(length, length, dtype=torch.bool, device=x.device).tril_()
            scores = self.hook_scores(torch.softmax(logits.masked_fill(~causal, float("-inf")), dim=-1))
            a = torch.matmul(scores, v)
        elif use_fused:
            a = fused.attention(q, k, v, self.scale)
        else:
            a = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=self.scale)
        return self.o_proj(a.transpose(1, 2).reshape(n, length, self.d_v))


class TransformerModel(TokenModel):
    """Transformer language model: embedding (+ learned positions) -> layers (+ rotary positions)
    -> LayerNorm -> unembed; the positional scheme is the config's (``position_scheme``)."""

    def __init__(self, config: dict):
        layers = [TransformerLayer(config, i) for i in range(config["n_layers"])]
        super().__init__(config, layers, config["norm"], config["norm_eps"])
        self.init_weights(config["gamma"])
        self.name_hook_points()

    def conv_kernels(self) -> list[torch.Tensor]:
        """Per layer, the q/k/v convolution's kernel (channels = 4 d_model, width); [] without one."""
        return [layer.conv_weight.detach().clone() for layer in self.layers if layer.qkv_conv]


@dataclass
class AttentionConfig(ModelConfig):
    """The settings every positional scheme shares; see the module docstring."""

    n_heads: int = 1
    v_expand: int = 2
    d_ff: int | None = None
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
        check_choice(self.norm, "norm", ("layernorm", "rmsnorm"))
        require(self.norm_eps > 0, "norm_eps", f"must be > 0, got {self.norm_eps!r}")
        require(isinstance(self.qkv_conv, bool), "qkv_conv", f"must be true or false, got {self.qkv_conv!r}")
        check_int("conv_width", self.conv_width, minimum=1)


@dataclass
class TransformerConfig(AttentionConfig):
    """Transformer / conv-Transformer: learned absolute positions (``pos_enc``)."""

    pos_enc: bool = True

    def validate(self) -> None:
        super().validate()
        require(isinstance(self.pos_enc, bool), "pos_enc", f"must be true or false, got {self.pos_enc!r}")


def _real(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def rotary_dims(config: dict) -> int:
    """The channels of each head that rotate: int(d_head * rope_fraction)."""
    return int(config["d_model"] // config["n_heads"] * config["rope_fraction"])


@dataclass
class RotaryTransformerConfig(AttentionConfig):
    """transformer-rope: rotary positions on queries and keys, no learned positions."""

    rope_base: float = 10000.0
    rope_fraction: float = 1.0  # all of each head's dims rotate, as in Llama (Pythia/GPT-NeoX: 0.25)

    def validate(self) -> None:
        super().validate()
        require(_real(self.rope_base) and self.rope_base > 0, "rope_base",
                f"must be a number > 0, got {self.rope_base!r}")
        self.rope_base = float(self.rope_base)
        require(_real(self.rope_fraction) and 0 < self.rope_fraction <= 1, "rope_fraction",
                f"must be a number in (0, 1], got {self.rope_fraction!r}")
        self.rope_fraction = float(self.rope_fraction)
        dims = rotary_dims(self.__dict__)
        require(dims >= 2 and dims % 2 == 0, "rope_fraction",
                f"rotates int({self.d_model // self.n_heads} * {self.rope_fraction}) = {dims} dims of each head; "
                f"that must be even and at least 2")


@dataclass
class NoPositionTransformerConfig(AttentionConfig):
    """transformer-nope: no positional information but the causal mask."""


build_transformer = model_factory(TransformerConfig, TransformerModel)
build_transformer_rope = model_factory(RotaryTransformerConfig, TransformerModel)
build_transformer_nope = model_factory(NoPositionTransformerConfig, TransformerModel)


VARIANTS: dict[str, tuple[dict, str]] = {
    "transformer": ({}, "Transformer of appendix E.2: single head, SiLU FFN (hidden d_model), v dim 2*d_model"),
    "conv-transformer": ({"qkv_conv": True},
                         "Transformer with a nonlinear causal conv on Q, K, V, mirroring Mamba's (§4.3)"),
}
#: the same block with another positional scheme: controls for positions/lengths outside training
POSITION_VARIANTS: dict[str, tuple[Callable, str]] = {
    "transformer-rope": (build_transformer_rope, "Transformer, rotary positions on Q, K (GPT-NeoX/Llama): any length"),
    "transformer-nope": (build_transformer_nope, "Transformer, no positional encoding (causal mask only): any length"),
}

#: tags of these architectures on model cards and the Hub
FAMILY_TAGS = ("transformer",)
ARCHITECTURES = {**presets(build_transformer, VARIANTS), **POSITION_VARIANTS}
