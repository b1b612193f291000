"""Pieces shared by the first-party architectures: config checks, norms, the causal depthwise
convolution, init helpers and the base model (embedding, layers, final norm, unembedding).

Speed notes. On a CPU the small models of the papers are bound by the elementwise work around the
matmuls, not by the matmuls. The causal convolution is therefore a custom autograd function that
works on the (N, S, C) layout the projections produce (no transposes, no padded copies, the SiLU
fused into its backward), and the norms avoid materialising more than one wide temporary.
"""

from __future__ import annotations

from functools import partial
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from achilles import ConfigError, HookedModel, HookPoint, init_gamma_

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
        from .fused import require_fused
        require_fused()


def presets(build: Callable[..., Any], variants: dict[str, tuple[dict, str]]) -> dict[str, tuple[Callable, str]]:
    """name -> (factory, description): each variant is ``build`` with its settings as new defaults.
    The package registers the ``ARCHITECTURES`` of every module of it, so a new architecture
    module needs no list kept by hand."""
    return {name: (partial(build, **settings) if settings else build, description)
            for name, (settings, description) in variants.items()}


def functorch_active() -> bool:
    """True inside ``torch.func`` transforms (vmap, grad, ...), e.g. an ensemble's vmapped
    forward. The hand-written autograd Functions of this package are not written for those
    transforms, so the layers then run plain PyTorch ops (same values)."""
    try:
        return bool(torch._C._are_functorch_transforms_active())
    except AttributeError:  # pragma: no cover - older torch
        return False


# -- norms -----------------------------------------------------------------------------------
class _RMSNormFn(torch.autograd.Function):
    """y = x * r * w with r = (mean(x^2) + eps)^-1/2 over the last dim, with a hand-written
    backward (``F.rms_norm`` decomposes into about ten autograd ops on CPU)."""

    @staticmethod
    def forward(ctx, x, weight, eps: float):
        dim = x.shape[-1]
        r = torch.rsqrt(torch.linalg.vector_norm(x, dim=-1, keepdim=True).square_().div_(dim).add_(eps))
        xn = x * r
        ctx.save_for_backward(x, r, xn, weight)
        return xn * weight

    @staticmethod
    def backward(ctx, grad):
        x, r, xn, weight = ctx.saved_tensors
        dim = x.shape[-1]
        grad_x = grad_w = None
        if ctx.needs_input_grad[1]:
            grad_w = (grad * xn).reshape(-1, dim).sum(0)
        if ctx.needs_input_grad[0]:
            gw = grad * weight
            coef = torch.linalg.vecdot(gw, x, dim=-1).unsqueeze(-1).mul_(r.pow(3)).div_(-dim)
            grad_x = torch.addcmul(gw.mul_(r), x, coef)
        return grad_x, grad_w, None


class RMSNorm(nn.Module):
    """RMSNorm with a learned scale (ones at init), eps 1e-5 as in mamba_ssm."""

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if functorch_active():
            return F.rms_norm(x, (x.shape[-1],), self.weight, self.eps)
        return _RMSNormFn.apply(x, self.weight, self.eps)


def make_norm(kind: str, dim: int, eps: float) -> nn.Module:
    return RMSNorm(dim, eps) if kind == "rmsnorm" else nn.LayerNorm(dim, eps=eps)


# -- causal depthwise convolution ------------------------------------------------------------
class _CausalConv(torch.autograd.Function):
    """out[:, t, c] = act(b[c] + sum_k w[c, k] * x[:, t - (K-1) + k, c]), x in (N, S, C) layout.

    Same result as ``nn.Conv1d(C, C, K, groups=C, padding=K-1)`` on the transposed input,
    truncated to the first S outputs (PyTorch's and mamba_ssm's convention: w[:, K-1] weighs the
    current token). Forward: K fused multiply-adds on shifted views; backward: the transposed
    shifts, per-channel dot products for the kernel gradient, SiLU's derivative fused.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, silu: bool):
        length = x.shape[1]
        width = weight.shape[1]
        wt = weight.t().contiguous()                       # (K, C): wt[k] is tap k over channels
        pre = torch.addcmul(bias, x, wt[width - 1]) if bias is not None else x * wt[width - 1]
        for k in range(width - 1):
            shift = width - 1 - k
            if shift < length:
                pre[:, shift:].addcmul_(x[:, :length - shift], wt[k])
        ctx.silu = silu
        ctx.has_bias = bias is not None
        ctx.save_for_backward(x, wt, pre if silu else None)
        return F.silu(pre) if silu else pre

    @staticmethod
    def backward(ctx, grad):
        x, wt, pre = ctx.saved_tensors
        length = x.shape[1]
        width = wt.shape[0]
        g = torch.ops.aten.silu_backward(grad, pre) if ctx.silu else grad.contiguous()
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = g * wt[width - 1]
            for k in range(width - 1):
                shift = width - 1 - k
                if shift < length:
                    grad_x[:, :length - shift].addcmul_(g[:, shift:], wt[k])
        if ctx.needs_input_grad[1]:
            grad_w = torch.zeros_like(wt)
            for k in range(width):
                shift = width - 1 - k
                if shift < length:
                    grad_w[k] = torch.linalg.vecdot(x[:, :length - shift], g[:, shift:], dim=1).sum(0)
            grad_w = grad_w.t()
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = g.sum((0, 1))
        return grad_x, grad_w, grad_b, None


def causal_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                silu: bool = True) -> torch.Tensor:
    """Causal depthwise convolution (+ SiLU) of x (N, S, C) with weight (C, K), bias (C,)."""
    if functorch_active():
        return causal_conv_plain(x, weight, bias, silu)
    return _CausalConv.apply(x, weight, bias, silu)


def causal_conv_plain(x, weight, bias, silu=True):
    """The same convolution in plain differentiable ops (for torch.func transforms)."""
    length, width = x.shape[1], weight.shape[1]
    xp = F.pad(x, (0, 0, width - 1, 0))
    out = sum(xp[:, k:k + length] * weight[:, k] for k in range(width))
    if bias is not None:
        out = out + bias
    return F.silu(out) if silu else out


def causal_conv_reference(x, weight, bias, silu=True):
    """The same convolution through ``F.conv1d`` (used by tests)."""
    width = weight.shape[1]
    y = F.conv1d(x.transpose(1, 2), weight.unsqueeze(1), bias, padding=width - 1,
                 groups=weight.shape[0])[..., : x.shape[1]].transpose(1, 2)
    return F.silu(y) if silu else y


# -- base model ------------------------------------------------------------------------------
class TokenModel(HookedModel):
    """Token embedding (+ learned absolute positional encoding) -> layers -> final norm -> unembed.

    Every layer maps the residual stream (N, S, d_model) to the next one and owns its hook points.
    Sites: ``embed`` (embedding + positional encoding), the layers' own sites, ``resid.{i}``.
    The unembedding is not tied to the embedding (the paper's init rate applies to each weight).
    """

    def __init__(self, config: dict, layers: list[nn.Module], norm: str, norm_eps: float):
        super().__init__()
        self.config = config
        d_model = config["d_model"]
        self.embed = nn.Embedding(config["vocab_size"], d_model)
        self.pos_embed = nn.Embedding(config["max_len"], d_model) if config["pos_enc"] else None
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

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        h = self.embed_tokens(tokens)
        for layer in self.layers:
            h = layer(h)
        return self.unembed_residual(h)

    def unembed_residual(self, resid: torch.Tensor) -> torch.Tensor:
        """Final norm + unembedding of a residual-stream tensor (N, S, d_model) -> logits (logit lens)."""
        return self.unembed(self.final_norm(resid))
