"""The fused CUDA path: mamba-ssm's Mamba2 kernels, causal-conv1d and flash-attn.

Nothing here imports those packages at module import time. On CPU-only machines the ``cuda``
extra is not installed (the packages exist there only as shells that fail to import), so the
kernels are looked up lazily, once, and only when CUDA is available.

Backend rule (the ``backend`` setting of every architecture):

* ``torch``: always the pure-PyTorch path.
* ``auto``: the fused kernels when the input is on a CUDA device and the kernels import; the
  torch path otherwise (silently: this is the default on CPU).
* ``fused``: the kernels, or a clear ``ConfigError`` when building the model where they cannot
  run (no CUDA, or the ``cuda`` extra missing), and an ``AchillesError`` for a CPU input.

A layer whose hook points are being read or edited always runs the torch path for that call:
the S matrix and the other internals only exist there (probes need them).
"""

from __future__ import annotations

from types import SimpleNamespace

import torch
import torch.nn.functional as F

from achilles import AchillesError, ConfigError

from .common import functorch_active

_cache: dict[str, object] = {}


def kernels() -> SimpleNamespace | None:
    """The fused kernels, or None (the reason is in ``unavailable_reason()``)."""
    if "kernels" not in _cache:
        _cache["kernels"], _cache["reason"] = _load()
    return _cache["kernels"]  # type: ignore[return-value]


def unavailable_reason() -> str:
    kernels()
    return str(_cache.get("reason") or "")


def _load() -> tuple[SimpleNamespace | None, str]:
    if not torch.cuda.is_available():
        return None, "CUDA is not available on this machine"
    try:
        from causal_conv1d import causal_conv1d_fn
        from mamba_ssm.ops.triton.layernorm_gated import rmsnorm_fn
        from mamba_ssm.ops.triton.ssd_combined import (mamba_chunk_scan_combined,
                                                       mamba_split_conv1d_scan_combined)
    except Exception as exc:  # the shells on CPU machines, or a broken build
        return None, (f"the cuda extra (mamba-ssm, causal-conv1d) does not import "
                      f"({type(exc).__name__}: {exc}); install it with "
                      f"pip install --no-build-isolation -e '.[cuda]'")
    try:
        from flash_attn import flash_attn_func
    except Exception:
        flash_attn_func = None
    return SimpleNamespace(causal_conv1d_fn=causal_conv1d_fn, rmsnorm_fn=rmsnorm_fn,
                           mamba_chunk_scan_combined=mamba_chunk_scan_combined,
                           mamba_split_conv1d_scan_combined=mamba_split_conv1d_scan_combined,
                           flash_attn_func=flash_attn_func), ""


def require_fused() -> None:
    """Called when a model is built with ``backend='fused'``."""
    if kernels() is None:
        raise ConfigError("backend", f"'fused' needs CUDA and the cuda extra, but {unavailable_reason()}; "
                                     "use backend='torch' or 'auto'")


def use_fused(backend: str, x: torch.Tensor, hooked: bool) -> bool:
    """Whether this call of a layer runs the fused kernels."""
    if backend == "torch" or hooked or functorch_active():
        return False  # (the kernels' autograd Functions do not support torch.func transforms)
    if backend == "fused":
        if not x.is_cuda:
            raise AchillesError(f"backend='fused' needs the model and its input on a CUDA device, "
                                f"got a {x.device.type} tensor; move the model with .cuda() or use backend='auto'")
        return True
    return x.is_cuda and kernels() is not None


# -- wrappers ----------------------------------------------------------------------------------
def causal_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, silu: bool = True):
    """causal-conv1d on the (N, S, C) layout (channel-last strides, as mamba_ssm passes it).
    The kernel supports widths 2 to 4; other widths use the torch function."""
    if not 2 <= weight.shape[1] <= 4:
        from .common import causal_conv as torch_causal_conv
        return torch_causal_conv(x, weight, bias, silu)
    out = kernels().causal_conv1d_fn(x.transpose(1, 2), weight, bias, activation="silu" if silu else None)
    return out.transpose(1, 2)


def mamba2_split_scan(zxbcdt, conv_weight, conv_bias, dt_bias, A, D, chunk_size, norm_weight, norm_eps,
                      out_weight, headdim):
    """The whole plain Mamba2 mixer in one fused call (conv, SSD, gated RMSNorm, out-projection)."""
    return kernels().mamba_split_conv1d_scan_combined(
        zxbcdt, conv_weight, conv_bias, dt_bias, A, D=D, chunk_size=chunk_size, activation="silu",
        rmsnorm_weight=norm_weight, rmsnorm_eps=norm_eps, outproj_weight=out_weight, outproj_bias=None,
        headdim=headdim, ngroups=1, norm_before_gate=False)


def chunk_scan(x, dt_raw, A, B, C, D, dt_bias, chunk_size):
    """SSD with softplus(dt_raw + dt_bias) and the D skip inside: x (N,S,H,P), B/C (N,S,Nst)."""
    return kernels().mamba_chunk_scan_combined(
        x, dt_raw, A, B.unsqueeze(2), C.unsqueeze(2), chunk_size, D=D, z=None, dt_bias=dt_bias,
        dt_softplus=True)


def gated_rmsnorm(y, z, weight, eps):
    """RMSNorm(y * SiLU(z)) * weight (mamba_ssm's norm_before_gate=False)."""
    return kernels().rmsnorm_fn(y, weight, None, z=z, eps=eps, group_size=None, norm_before_gate=False)


def attention(q, k, v, scale):
    """Causal attention of q, k (N, H, S, dk) and v (N, H, S, dv) -> (N, H, S, dv).

    flash-attn runs half precision only and needs one head size for q, k and v: for fp16/bf16
    inputs q and k are zero-padded to v's head size (dot products unchanged, the scale passed
    explicitly; head sizes up to 256, multiples of 8). Other inputs use ``scaled_dot_product_attention``, which on CUDA picks its own
    fused kernel.
    """
    fa = kernels().flash_attn_func
    dv = v.shape[-1]
    if (fa is None or q.dtype not in (torch.float16, torch.bfloat16) or q.shape[-1] > dv
            or dv > 256 or dv % 8):
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale)
    pad = v.shape[-1] - q.shape[-1]
    if pad:
        q, k = F.pad(q, (0, pad)), F.pad(k, (0, pad))
    out = fa(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), softmax_scale=scale, causal=True)
    return out.transpose(1, 2)
