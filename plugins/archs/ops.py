"""The primitives every compute path of the first-party architectures shares: the causal
depthwise convolution, RMSNorm (plain and gated), and the variants' SSM input.

Each primitive is written once, as plain tensor code on the (N, S, C) layout the projections
produce, with its backward written out beside it. Three callers use the same code:

* the layers' modular forward, through the autograd Functions below (``causal_conv``,
  ``RMSNorm``), whose backward is the hand-written one;
* ``torch.func`` transforms (an ensemble's vmap): the same forward code under ordinary autograd,
  because the hand-written Functions are not written for those transforms;
* the fast Mamba2 path (``mamba2_fast.py``), which calls the forward and backward pieces directly
  inside its own Function.

Speed notes. On a CPU the papers' small models are bound by the elementwise work around the
matmuls, not by the matmuls: the convolution is K fused multiply-adds on shifted views (no
transposes, no padded copies), SiLU's derivative is fused into its backward (``silu_backward``),
the kernel gradient is one fused reduction per tap (``channel_dots``), and the norms never
materialise more than one wide temporary.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["functorch_active", "conv_forward", "conv_input_grad", "conv_param_grads", "channel_dots",
           "causal_conv", "rms_factor", "rms_norm_input_grad", "RMSNorm", "GatedRMSNorm", "make_norm",
           "ssm_input", "ssm_input_backward", "at_least_fp32", "full_precision"]


def functorch_active() -> bool:
    """True inside ``torch.func`` transforms (vmap, grad, ...), e.g. an ensemble's vmapped forward."""
    try:
        return bool(torch._C._are_functorch_transforms_active())
    except AttributeError:  # pragma: no cover - older torch
        return False


# -- causal depthwise convolution ------------------------------------------------------------
# out[:, t, c] = b[c] + sum_k w[c, k] * x[:, t - (K-1) + k, c]: nn.Conv1d(C, C, K, groups=C,
# padding=K-1) on the transposed input, truncated to the first S outputs (PyTorch's and
# mamba_ssm's convention: w[:, K-1] weighs the current token). The pieces take the kernel
# transposed, wt = w.t() of shape (K, C), so that wt[k] is tap k over the channels.

def conv_forward(x: torch.Tensor, wt: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """The convolution before its activation: K fused multiply-adds on shifted views of x (N, S, C)."""
    length, width = x.shape[1], wt.shape[0]
    batched = functorch_active()  # vmap has no batching rule for addcmul_ (it would loop)
    pre = torch.addcmul(bias, x, wt[width - 1]) if bias is not None else x * wt[width - 1]
    for k in range(width - 1):
        shift = width - 1 - k
        if shift < length:
            if batched:
                pre[:, shift:] += x[:, :length - shift] * wt[k]
            else:
                pre[:, shift:].addcmul_(x[:, :length - shift], wt[k])
    return pre


def conv_input_grad(g: torch.Tensor, wt: torch.Tensor, base: torch.Tensor | None = None) -> torch.Tensor:
    """The gradient with respect to x of ``conv_forward`` (the transposed shifts), plus ``base``."""
    length, width = g.shape[1], wt.shape[0]
    out = torch.addcmul(base, g, wt[width - 1]) if base is not None else g * wt[width - 1]
    for k in range(width - 1):
        shift = width - 1 - k
        if shift < length:
            out[:, :length - shift].addcmul_(g[:, shift:], wt[k])
    return out


def channel_dots(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum over rows of a * b, sum over rows of b) per channel, for 2-D (rows, C) a and b.

    On CPU this is one fused pass: the batch-norm backward kernel computes exactly these two
    reductions (grad_weight = sum(dy * (x - mean) * invstd) with mean 0, invstd 1; grad_bias =
    sum(dy)) without materialising the product. Elsewhere, or if the op is unavailable, the
    plain product and sums."""
    if a.device.type == "cpu" and a.is_contiguous() and b.is_contiguous():
        c = a.shape[-1]
        try:
            _, dot, total = torch.ops.aten.native_batch_norm_backward(
                b, a, None, None, None, a.new_zeros(c), a.new_ones(c), True, 0.0, [False, True, True])
            return dot, total
        except (RuntimeError, AttributeError):  # pragma: no cover - depends on the torch build
            pass
    return (a * b).sum(0), b.sum(0)


def conv_param_grads(x: torch.Tensor, g: torch.Tensor, gwt: torch.Tensor, gb: torch.Tensor | None) -> None:
    """Accumulate the kernel gradient into ``gwt`` (K, C) and the bias gradient into ``gb`` (C,)
    for the output gradient ``g`` (N, S, C), contiguous. Overwrites ``g``.

    Each tap is one dot product over the flattened (N*S, C) rows shifted by s. Flattening would
    pair the last s positions of a sample with the first s of the next; those pairs vanish
    because the first s positions of ``g`` are zeroed (progressively, taps in order of s)."""
    n, length, c = g.shape
    width = gwt.shape[0]
    x2, g2 = x.reshape(-1, c), g.view(-1, c)
    dot, total = channel_dots(x2, g2)
    gwt[width - 1] += dot
    if gb is not None:
        gb += total
    for s in range(1, min(width, length)):
        g[:, s - 1].zero_()
        gwt[width - 1 - s] += channel_dots(x2[:-s], g2[s:])[0]


def _common_dtype(*tensors):
    """The tensors (None kept) cast to their promoted dtype: a hand-written Function computes in one
    dtype, so bf16 activations (autocast) meeting fp32 weights compute in fp32; autograd casts each
    input's gradient back to that input's dtype."""
    dtype = None
    for t in tensors:
        if t is not None:
            dtype = t.dtype if dtype is None else torch.promote_types(dtype, t.dtype)
    return tuple(t if t is None or t.dtype == dtype else t.to(dtype) for t in tensors)


def at_least_fp32(t: torch.Tensor) -> torch.Tensor:
    """``t`` in float32 if it is a narrower float (bf16 under autocast); float64 stays float64."""
    return t if t.dtype in (torch.float32, torch.float64) else t.float()


def full_precision(device_type: str):
    """A region autocast leaves alone (a recurrence whose accumulations need fp32 under bf16
    autocast; its inputs are cast with ``at_least_fp32``)."""
    return torch.autocast(device_type, enabled=False)


class _CausalConv(torch.autograd.Function):
    """``conv_forward`` (+ SiLU) with the hand-written backward above."""

    @staticmethod
    def forward(ctx, x, weight, bias, silu: bool):
        x, weight, bias = _common_dtype(x, weight, bias)  # bf16 activations, fp32 weights: fp32
        wt = weight.t().contiguous()
        pre = conv_forward(x, wt, bias)
        ctx.silu, ctx.has_bias = silu, bias is not None
        ctx.save_for_backward(x, wt, pre if silu else None)
        return F.silu(pre) if silu else pre

    @staticmethod
    def backward(ctx, grad):
        x, wt, pre = ctx.saved_tensors
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        # conv_param_grads overwrites its g: never hand it the caller's gradient
        g = torch.ops.aten.silu_backward(grad, pre) if ctx.silu else grad.clone(memory_format=torch.contiguous_format)
        grad_x = conv_input_grad(g, wt) if need_x else None
        grad_w = grad_b = None
        if need_w:
            gwt = torch.zeros_like(wt)
            gb = torch.zeros_like(wt[0]) if ctx.has_bias and need_b else None
            conv_param_grads(x, g, gwt, gb)
            grad_w, grad_b = gwt.t(), gb
        elif ctx.has_bias and need_b:
            grad_b = g.sum((0, 1))
        return grad_x, grad_w, grad_b, None


def causal_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                silu: bool = True) -> torch.Tensor:
    """Causal depthwise convolution (+ SiLU) of x (N, S, C) with weight (C, K), bias (C,)."""
    if functorch_active():
        pre = conv_forward(x, weight.t(), bias)
        return F.silu(pre) if silu else pre
    return _CausalConv.apply(x, weight, bias, silu)


# -- RMSNorm ---------------------------------------------------------------------------------
# xn = x * r with r = (mean(x^2) + eps)^-1/2 over the last dimension, then the learned scale.

def rms_factor(x: torch.Tensor, eps: float) -> torch.Tensor:
    """r = (mean(x^2, last dim) + eps)^-1/2, shape x.shape[:-1]."""
    return torch.rsqrt(torch.linalg.vector_norm(x, dim=-1).square_().div_(x.shape[-1]).add_(eps))


def rms_norm_input_grad(x: torch.Tensor, r: torch.Tensor, dot: torch.Tensor,
                        grad_scaled: torch.Tensor) -> torch.Tensor:
    """The gradient with respect to x of xn = x * r(x), given ``grad_scaled`` = (dL/dxn) * r and
    ``dot`` = <dL/dxn, x> per row: dL/dx = (dL/dxn) * r - x * r^3 * dot / dim. Written into
    ``grad_scaled`` (callers build it in the cheapest way their layout allows)."""
    coef = dot.mul(r.pow(3)).div_(-x.shape[-1]).unsqueeze(-1)
    return grad_scaled.addcmul_(x, coef)


class _RMSNormFn(torch.autograd.Function):
    """x * r * w with a hand-written backward (``F.rms_norm`` is about ten autograd ops on CPU)."""

    @staticmethod
    def forward(ctx, x, weight, eps: float):
        x, weight = _common_dtype(x, weight)  # under bf16 autocast: the norm in fp32 (as mamba_ssm's)
        r = rms_factor(x, eps).unsqueeze(-1)
        xn = x * r
        ctx.save_for_backward(x, r, xn, weight)
        return xn * weight

    @staticmethod
    def backward(ctx, grad):
        x, r, xn, weight = ctx.saved_tensors
        grad_x = grad_w = None
        if ctx.needs_input_grad[1]:
            grad_w = (grad * xn).reshape(-1, x.shape[-1]).sum(0)
        if ctx.needs_input_grad[0]:
            gw = grad * weight
            dot = torch.linalg.vecdot(gw, x, dim=-1)
            grad_x = rms_norm_input_grad(x, r.squeeze(-1), dot, gw.mul_(r))
        return grad_x, grad_w, None


class RMSNorm(nn.Module):
    """RMSNorm with a learned scale (ones at init), eps 1e-5 as in mamba_ssm."""

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if functorch_active():
            x, weight = _common_dtype(x, self.weight)  # as _RMSNormFn: under bf16 autocast the norm in fp32
            return F.rms_norm(x, (x.shape[-1],), weight, self.eps)
        return _RMSNormFn.apply(x, self.weight, self.eps)


class GatedRMSNorm(RMSNorm):
    """RMSNorm(y * SiLU(z)): mamba_ssm's ``RMSNormGated`` with ``norm_before_gate=False`` and one
    group (the whole inner dimension). Same parameter as ``RMSNorm`` (``weight``)."""

    def forward(self, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return super().forward(y * F.silu(z))


def make_norm(kind: str, dim: int, eps: float) -> nn.Module:
    return RMSNorm(dim, eps) if kind == "rmsnorm" else nn.LayerNorm(dim, eps=eps)


# -- the SSM's input (Mamba2 and its variants) -----------------------------------------------
def ssm_input(kind: str, conv: torch.Tensor, pre_conv: torch.Tensor, inplace: bool = False) -> torch.Tensor:
    """(x, B, C) of the SSM from the convolution's output ``conv`` = SiLU(Conv1d(xBC)) and its
    input ``pre_conv`` = xBC: ``conv`` (Mamba2), ``conv + xBC`` (residual, Achilles' Heel §5) or
    ``conv * xBC`` (gated, eq. 9). ``inplace`` writes into ``conv``."""
    if kind == "residual":
        return conv.add_(pre_conv) if inplace else conv + pre_conv
    if kind == "gated":
        return conv.mul_(pre_conv) if inplace else conv * pre_conv
    return conv


def ssm_input_backward(kind: str, grad: torch.Tensor, pre: torch.Tensor, pre_conv: torch.Tensor
                       ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Backward of ``ssm_input(kind, SiLU(pre), pre_conv)``: (the gradient of the convolution's
    pre-activation ``pre``, the direct gradient of ``pre_conv`` or None)."""
    if kind == "gated":
        return torch.ops.aten.silu_backward(grad * pre_conv, pre), grad * F.silu(pre)
    if kind == "residual":
        return torch.ops.aten.silu_backward(grad, pre), grad
    return torch.ops.aten.silu_backward(grad, pre), None
