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
the S matrix and the other internals only exist there (probes need them). Each layer's own
dispatcher applies that rule (``Mamba2Layer.choose_path``); this module says whether the backend
and the input allow the kernels (``kernels_allowed``), and maps a block onto them.

How the Mamba2 block maps onto mamba_ssm's kernels (``mamba2_layer_forward``), checked against
the torch path on CPU by ``tests/test_archs_fused_interpret.py`` (Triton's interpreter) and on a
GPU by ``tests/test_archs_fused.py``:

* in_proj's output keeps mamba_ssm's row order [z, x, B, C, dt], so the plain block hands it to
  ``mamba_split_conv1d_scan_combined`` whole (conv + SSD + gated RMSNorm + out_proj in one call);
* the variants (residual / gated SSM input, global dt), and every block when causal-conv1d is
  not installed (the torch convolution then), run the pieces: causal-conv1d on the
  (N, C, S) view of the channel-last (N, S, C) tensor, ``mamba_chunk_scan_combined`` with x as
  (N, S, H, P), B and C as one group (N, S, 1, Nst), the raw dt with ``dt_bias`` and the softplus
  inside the kernel (``dt_softplus=True``), D per head, no z (the gate is applied by the norm);
  then the gated RMSNorm kernel with ``norm_before_gate=False`` over the whole inner dimension;
* A = -exp(A_log) in float32, as mamba_ssm's Mamba2 passes it.

Under bf16 autocast (``--precision bf16``, the paper profile's default on a GPU) nothing here casts:
in_proj gives bf16 activations and the kernels take them with the fp32 weights, as in mamba_ssm's
own autocast training (its combined kernel casts the out-projection weight to the autocast dtype;
dt, A and the cumulative sums are computed in fp32 inside the kernels). Checked by the ``gpu``
cases of tests/test_precision.py (run by benchmarks/gpu-check.sh's bf16-parity-tests step).
"""

from __future__ import annotations

from types import SimpleNamespace

import torch
import torch.nn.functional as F

from achilles import AchillesError, ConfigError

from .ops import causal_conv as torch_causal_conv, ssm_input

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
    """mamba-ssm's Triton kernels are required; causal-conv1d (a CUDA extension) and flash-attn
    are optional: without causal-conv1d the convolution runs in torch and the plain block uses
    the separate kernels instead of the one-call one."""
    if not torch.cuda.is_available():
        return None, "CUDA is not available on this machine"
    try:
        from mamba_ssm.ops.triton.layernorm_gated import rmsnorm_fn
        from mamba_ssm.ops.triton.ssd_combined import (mamba_chunk_scan_combined,
                                                       mamba_split_conv1d_scan_combined)
    except Exception as exc:  # the shells on CPU machines, or a broken build
        return None, (f"the cuda extra (mamba-ssm, causal-conv1d) does not import "
                      f"({type(exc).__name__}: {exc}); install it with "
                      f"pip install --no-build-isolation -e '.[cuda]'")
    try:
        from causal_conv1d import causal_conv1d_fn
    except Exception:
        causal_conv1d_fn = None
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


def kernels_allowed(backend: str, x: torch.Tensor) -> tuple[bool, str]:
    """Whether ``backend`` and the input ``x`` let a layer run the kernels, and why (the layer
    still runs the torch path while its hook points are active or under ``torch.func``)."""
    if backend == "torch":
        return False, "backend='torch'"
    if backend == "fused":
        if not x.is_cuda:
            raise AchillesError(f"backend='fused' needs the model and its input on a CUDA device, "
                                f"got a {x.device.type} tensor; move the model with .cuda() or use backend='auto'")
        return True, "backend='fused'"
    if not x.is_cuda:
        return False, f"backend='auto' with a {x.device.type} input"
    if kernels() is None:
        return False, f"backend='auto', but {unavailable_reason()}"
    return True, "backend='auto' with a CUDA input and the cuda extra installed"


def use_fused(backend: str, x: torch.Tensor, hooked: bool, in_transform: bool) -> bool:
    """Whether this call of a layer runs the fused kernels (never while hooked or under
    ``torch.func``: the kernels' autograd Functions do not support those transforms)."""
    return not hooked and not in_transform and kernels_allowed(backend, x)[0]


# -- wrappers ----------------------------------------------------------------------------------
def causal_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, silu: bool = True):
    """causal-conv1d on the (N, S, C) layout (channel-last strides, as mamba_ssm passes it).
    The kernel supports widths 2 to 4; other widths, or no causal-conv1d, use the torch function."""
    if not 2 <= weight.shape[1] <= 4 or kernels().causal_conv1d_fn is None:
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


def mamba2_layer_forward(layer, h: torch.Tensor) -> torch.Tensor:
    """``h + block(RMSNorm(h))`` of a ``Mamba2Layer`` on the kernels, with the layer's weights
    (the mapping is described in the module docstring; no hook point is active here)."""
    dims = layer.dims
    zxbcdt = layer.in_proj(layer.norm(h))
    A = -torch.exp(layer.A_log.float())
    width = layer.conv_weight.shape[1]
    one_call = kernels().causal_conv1d_fn is not None  # the one-call kernel runs causal-conv1d inside
    if one_call and layer.ssm_input == "conv" and layer.dt_source == "linear" and 2 <= width <= 4:
        return h + mamba2_split_scan(zxbcdt, layer.conv_weight, layer.conv_bias, layer.dt_bias, A, layer.D,
                                     layer.chunk_size, layer.gate_norm.weight, layer.gate_norm.eps,
                                     layer.out_proj.weight, dims.head_dim)
    n, length, _ = h.shape
    z, xBC, dt_raw = dims.split_in_proj(zxbcdt)
    conv = causal_conv(xBC, layer.conv_weight, layer.conv_bias, silu=True)
    x, B, C = dims.split_conv(ssm_input(layer.ssm_input, conv, xBC))
    if dt_raw is None:
        dt_raw = layer.global_dt(xBC, conv)
    y = chunk_scan(x.reshape(n, length, dims.n_heads, dims.head_dim), dt_raw, A, B, C, layer.D,
                   layer.dt_bias, layer.chunk_size)
    y = gated_rmsnorm(y.reshape(n, length, dims.d_inner), z, layer.gate_norm.weight, layer.gate_norm.eps)
    return h + layer.out_proj(y)


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
