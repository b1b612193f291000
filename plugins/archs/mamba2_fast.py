"""The fast pure-PyTorch path of a Mamba2 layer: an optimisation of ``Mamba2Layer.forward_modular``
(mamba2.py), one autograd Function with a hand-written backward, run over batch tiles.

It computes the same function with the same weights and the same primitives (``ops.py``: the
convolution, the RMS factor, the SSM input; ``ssd.py``: the decay mask and the mixing matrix) and
the same split of the in-projection (``Mamba2Dims``); the tests compare it with the modular path,
values and gradients. What it changes is the organisation, for speed on CPU, where these small
models are bound by the elementwise work and the memory traffic around the matmuls:

* the in-projection is split by rows into z, x, B, C and dt so every operand of the small
  batched matmuls is contiguous (strided operands send ``bmm`` down a slow path);
* the SSD uses the quadratic form with dt and D folded into the (S, S) mixing matrix, so the
  only work on the wide x is one batched matmul each way;
* the gated RMSNorm's scale is folded into the out-projection and the per-token norm factor is
  applied after it (on d_model channels instead of D_in);
* the layer's pre-norm and its residual add are inside the Function too (the norm scales are
  folded into the projections, the per-token factors applied on the narrow side);
* the batch is processed in tiles of about ``TILE_TOKENS`` tokens, so each tile's
  intermediates stay in cache and come from the allocator's reusable heap (no page faults on
  fresh multi-MB blocks), and no autograd graph is built inside the mixer; each direction makes
  two passes over the tiles around the small (N, H, S, S) SSD work, which is done once for the
  whole batch.

It covers the linear dt source (mamba2, -allone, -posenc, -residual, -gated) with the quadratic
SSD form; ``Mamba2Layer.choose_path`` sends everything else to the modular path.

Under bf16 autocast (``--precision bf16``) the Function runs with autocast off and casts for
itself: the wide work (projections, convolution, gate, y = M @ x, their backward) in bf16; the
residual stream, the RMS factors, the SSD mixing (dt, the cumulative log-decays, exp, M and its
backward) and the weight-gradient sums in fp32, as mamba_ssm's kernels keep their dt/A/cumsum
math in fp32 (``_Spec.dtype``). Measured
speeds: ``benchmarks/RESULTS-archs.md``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from .ops import (at_least_fp32, conv_forward, conv_input_grad, conv_param_grads, full_precision, rms_factor,
                  rms_norm_input_grad, ssm_input, ssm_input_backward)
from .ssd import decay_mask, mixing_matrix

__all__ = ["mamba2_layer_forward", "TILE_TOKENS"]

TILE_TOKENS = 4096  # tokens per batch tile on CPU (1-4 MB per wide intermediate at the paper shapes)


@dataclass(frozen=True)
class _Spec:
    dims: object      # Mamba2Dims
    ssm_input: str    # "conv" | "residual" | "gated"
    norm_eps: float
    #: the dtype of the wide work (projections, convolution, gate, y = M @ x): the input's, or bf16
    #: under bf16 autocast. The residual stream, the norms' factors, the SSD mixing (dt, the
    #: cumulative log-decays, exp, M) and the weight-gradient sums stay fp32 (as mamba_ssm's kernels).
    dtype: torch.dtype | None = None


def _addmm_(acc: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> None:
    """acc += a @ b; an fp32 ``acc`` of bf16 products gets the product added (addmm_ needs one dtype)."""
    if a.dtype == acc.dtype:
        acc.addmm_(a, b)
    else:
        acc.add_(torch.mm(a, b))


def _rms_factor(x: torch.Tensor, eps: float) -> torch.Tensor:
    """``rms_factor`` in fp32 whatever x's dtype (a bf16 x: the sum of squares accumulated in fp32)."""
    if x.dtype in (torch.float32, torch.float64):
        return rms_factor(x, eps)
    return torch.rsqrt(torch.linalg.vector_norm(x, dim=-1, dtype=torch.float32).square_().div_(x.shape[-1]).add_(eps))


def _heads(t, n, length, heads):
    """(n, S, H*P) -> (n, H, S, P) view."""
    return t.view(n, length, heads, -1).transpose(1, 2)


def _unheads(t, n, length):
    """(n, H, S, P) -> (n, S, H*P)."""
    return t.transpose(1, 2).reshape(n, length, -1)


def _ssd_mixing(dtin, dt_bias, A, CB, D):
    """The small (N, H, S, S) part of the SSD for the whole batch (eq. 3-6): dt, the decay mask L,
    S = L o CB and the mixing matrix M = S * dt_j + D I (so y = M @ x)."""
    dt = F.softplus(dtin + dt_bias)                                       # (N, S, H)
    L = decay_mask((dt * A).transpose(1, 2))                              # (N, H, S, S)
    Smat = L * CB.unsqueeze(1)
    return dt, L, Smat, mixing_matrix(Smat, dt, D)


def _ssd_mixing_backward(g_M, dtin, dt_bias, A, dt, L, CB, Smat):
    """Gradients of ``_ssd_mixing`` with respect to CB, dtin, and the sums for D, A, dt_bias."""
    heads = dtin.shape[-1]
    g_D = torch.diagonal(g_M, dim1=-2, dim2=-1).sum((0, 2))
    dt_h = dt.transpose(1, 2)
    g_S = g_M * dt_h.unsqueeze(2)
    g_dt = (g_M * Smat).sum(-2)                                           # (N, H, S): column sums
    g_CB = (g_S * L).sum(1)                                               # (N, S, S)
    g_diff = g_S.mul_(CB.unsqueeze(1)).mul_(L)                            # d/d(cum_i - cum_j)
    g_cum = g_diff.sum(-1) - g_diff.sum(-2)                               # (N, H, S)
    g_loga = g_cum.flip(-1).cumsum(-1).flip(-1)                           # reverse cumsum
    g_A = (g_loga * dt_h).sum((0, 2))
    g_dt += g_loga * A.view(1, heads, 1)
    g_dtin = g_dt.transpose(1, 2) * torch.sigmoid(dtin + dt_bias)         # (N, S, H)
    return g_CB, g_dtin, g_D, g_A, g_dtin.sum((0, 1))


class _Mamba2Layer(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h, norm_in_w, w_in, conv_w, conv_b, dt_bias, A_log, D, norm_w, w_out, spec: _Spec):
        h = h.contiguous()
        n_all, length, d = h.shape
        dims = spec.dims
        din, heads = dims.d_inner, dims.n_heads
        rows, chans = dims.in_proj_rows(), dims.conv_channels()
        cd = spec.dtype or h.dtype                          # the wide work's dtype (bf16 under autocast)
        # pre-norm u = h * r_in * norm_in_w: the per-token factor on h, the scale folded into in_proj
        r_in = rms_factor(h, spec.norm_eps)
        u = (h * r_in.unsqueeze(-1)).to(cd)
        w_in_eff = (w_in * norm_in_w).to(cd)
        wt = conv_w.t().contiguous().to(cd)                # (K, C)
        A = -torch.exp(A_log)
        w_eff = (w_out * norm_w).to(cd)                     # gated-norm scale folded into out_proj
        out = torch.empty(n_all, length, d, dtype=h.dtype, device=h.device)
        w_p = {p: w_in_eff[rows[p]] for p in rows}                 # per-part weights (views)
        wt_p = {p: wt[:, chans[p]] for p in chans}
        b_p = {p: conv_b[chans[p]].to(cd) for p in chans}
        save = any(ctx.needs_input_grad)
        tiles = _tiles(n_all, length, h.is_cuda)
        # pass 1, per batch tile: projections (eq. 1), convolution (eq. 2), SSM inputs, C B^T
        dtin = at_least_fp32(torch.mm(u.view(-1, d), w_p["dt"].t()).view(n_all, length, heads))  # dt math in fp32
        CB = torch.empty(n_all, length, length, dtype=cd, device=h.device)
        saved = []
        for i0, i1 in tiles:
            n = i1 - i0
            u2 = u[i0:i1].view(n * length, d)
            z = torch.mm(u2, w_p["z"].t()).view(n, length, din)
            inp, pre, ssm = {}, {}, {}
            for p in ("x", "B", "C"):
                inp[p] = torch.mm(u2, w_p[p].t()).view(n, length, -1)
                pre[p] = conv_forward(inp[p], wt_p[p], b_p[p])
                ssm[p] = ssm_input(spec.ssm_input, F.silu(pre[p]), inp[p], inplace=True)
            torch.bmm(ssm["C"], ssm["B"].transpose(1, 2), out=CB[i0:i1])
            saved.append([z, inp, pre, ssm])
        # the small (N, H, S, S) work once for the whole batch (eq. 3-6), in fp32
        dt, L, Smat, M = _ssd_mixing(dtin, dt_bias, A, CB, D)
        M_w = M.to(cd)                                      # M @ x in the wide dtype
        # pass 2, per batch tile: y = M @ x, gate, norm, out-projection (eq. 6-8), residual
        for (i0, i1), tile in zip(tiles, saved):
            n = i1 - i0
            z, ssm = tile[0], tile[3]
            if heads == 1:
                y = torch.bmm(M_w[i0:i1].squeeze(1), ssm["x"])
            else:
                y = _unheads(torch.matmul(M_w[i0:i1], _heads(ssm["x"], n, length, heads)), n, length)
            sz = F.silu(z)
            yz = y * sz
            r = _rms_factor(yz, spec.norm_eps)                                # fp32
            o = torch.mm(yz.view(-1, din), w_eff.t())                         # (T, d)
            # residual add fused: out = h + r * o (in the residual stream's dtype)
            torch.addcmul(h[i0:i1].view(-1, d), o.to(h.dtype), r.view(-1, 1), out=out[i0:i1].view(-1, d))
            tile += [y, sz, yz, r, o]
        if save:
            ctx.spec, ctx.tiles, ctx.saved = spec, tiles, saved
            ctx.A, ctx.w_eff, ctx.w_in_eff = A, w_eff, w_in_eff
            ctx.M_w = M_w
            ctx.save_for_backward(h, r_in, u, norm_in_w, w_in, conv_w, conv_b, dt_bias, D, norm_w, w_out,
                                  dtin, dt, L, CB, Smat, M)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        (h, r_in, u, norm_in_w, w_in, conv_w, conv_b, dt_bias, D, norm_w, w_out,
         dtin, dt, L, CB, Smat, M) = ctx.saved_tensors
        spec, A, w_eff, w_in_eff, M_w = ctx.spec, ctx.A, ctx.w_eff, ctx.w_in_eff, ctx.M_w
        n_all, length, d = u.shape
        dims = spec.dims
        din, heads = dims.d_inner, dims.n_heads
        rows, chans = dims.in_proj_rows(), dims.conv_channels()
        cd = u.dtype                                       # the wide work's dtype
        wt = conv_w.t().contiguous()
        wt_w = wt.to(cd)
        grad_out = grad_out.contiguous()
        need = ctx.needs_input_grad
        g_u = torch.empty_like(u)
        g_w_in = torch.zeros_like(w_in)                    # gradient of w_in_eff until the end (fp32 sums)
        g_wt = torch.zeros_like(wt)
        g_b = torch.zeros_like(conv_b)
        g_w_eff = torch.zeros_like(w_out)
        w_p = {p: w_in_eff[rows[p]] for p in rows}
        g_w_p = {p: g_w_in[rows[p]] for p in rows}
        wt_p = {p: wt_w[:, chans[p]] for p in chans}
        g_wt_p = {p: g_wt[:, chans[p]] for p in chans}
        g_b_p = {p: g_b[chans[p]] for p in chans}
        g_M = torch.empty_like(M_w)
        pending = []
        # pass 1, per tile: out-projection, norm and gate backward; y = M @ x backward
        for (i0, i1), (z, inp, pre, ssm, y, sz, yz, r, o) in zip(ctx.tiles, ctx.saved):
            n = i1 - i0
            g2 = grad_out[i0:i1].view(n * length, d)
            # out = h + r * (yz @ w_eff^T),  r = rms_factor(yz): <dL/d(yz r), yz> = <g2, o>
            g_o = (g2 * r.view(-1, 1)).to(cd)
            g_yz = rms_norm_input_grad(yz.view(-1, din), r.view(-1), torch.linalg.vecdot(g2, o.to(g2.dtype), dim=-1),
                                       torch.mm(g_o, w_eff)).view(n, length, din)
            _addmm_(g_w_eff, g_o.t(), yz.view(-1, din))
            g_y = g_yz * sz
            g_z = torch.ops.aten.silu_backward(g_yz.mul_(y), z)               # g_yz reused as g_yz*y
            if heads == 1:
                torch.bmm(g_y, ssm["x"].transpose(1, 2), out=g_M[i0:i1].squeeze(1))
                g_x = torch.bmm(M_w[i0:i1].squeeze(1).transpose(1, 2), g_y)
            else:
                g_yh = _heads(g_y, n, length, heads)
                g_M[i0:i1] = torch.matmul(g_yh, _heads(ssm["x"], n, length, heads).transpose(-1, -2))
                g_x = _unheads(torch.matmul(M_w[i0:i1].transpose(-1, -2), g_yh), n, length)
            pending.append((g_z, g_x))
        # the small (N, H, S, S) backward once for the whole batch, in fp32
        g_CB, g_dtin, g_D, g_A, g_dt_bias = _ssd_mixing_backward(g_M.to(M.dtype), dtin, dt_bias, A, dt, L, CB, Smat)
        g_CB = g_CB.to(cd)
        g_dtin = g_dtin.reshape(-1, heads).to(cd)
        # pass 2, per tile: B and C gradients, SiLU and convolution backward, in-projection
        for (i0, i1), (z, inp, pre, ssm, *_), (g_z, g_x) in zip(ctx.tiles, ctx.saved, pending):
            n = i1 - i0
            u2 = u[i0:i1].view(n * length, d)
            g_ssm = {"x": g_x,
                     "C": torch.bmm(g_CB[i0:i1], ssm["B"]),
                     "B": torch.bmm(g_CB[i0:i1].transpose(1, 2), ssm["C"])}
            g_parts = {"z": g_z.view(-1, din)}
            for p in ("x", "B", "C"):
                g_pre, g_inp = ssm_input_backward(spec.ssm_input, g_ssm[p], pre[p], inp[p])
                g_parts[p] = conv_input_grad(g_pre, wt_p[p], g_inp).view(n * length, -1)
                if need[3]:
                    conv_param_grads(inp[p], g_pre, g_wt_p[p], g_b_p[p])
                else:
                    g_b_p[p] += g_pre.sum((0, 1))
            g_u2 = g_u[i0:i1].view(n * length, d)
            torch.mm(g_parts["z"], w_p["z"], out=g_u2)
            _addmm_(g_w_p["z"], g_parts["z"].t(), u2)
            for p in ("x", "B", "C"):
                _addmm_(g_w_p[p], g_parts[p].t(), u2)
                g_u2.addmm_(g_parts[p], w_p[p])
        ctx.tiles = ctx.saved = ctx.M_w = None
        g_u2 = g_u.view(-1, d)
        _addmm_(g_w_p["dt"], g_dtin.t(), u.view(-1, d))
        g_u2.addmm_(g_dtin, w_p["dt"])
        # u = h * r_in, r_in = rms_factor(h); plus the residual path: g_h = grad_out + dL/dh (in h's dtype)
        g_u = g_u.to(h.dtype)
        g_h = rms_norm_input_grad(h, r_in, torch.linalg.vecdot(g_u, h, dim=-1),
                                  torch.addcmul(grad_out, g_u, r_in.unsqueeze(-1)))
        g_norm_in_w = (g_w_in * w_in).sum(0)
        g_w_in = g_w_in.mul_(norm_in_w)
        g_w_out = g_w_eff * norm_w
        g_norm_w = (g_w_eff * w_out).sum(0)
        return (g_h, g_norm_in_w, g_w_in, g_wt.t() if need[3] else None, g_b, g_dt_bias, g_A * A, g_D,
                g_norm_w, g_w_out, None)


def _tiles(n: int, length: int, on_gpu: bool) -> list[tuple[int, int]]:
    if on_gpu:
        return [(0, n)]
    step = max(1, TILE_TOKENS // max(length, 1))
    return [(i, min(i + step, n)) for i in range(0, n, step)]


def mamba2_layer_forward(layer, h: torch.Tensor) -> torch.Tensor:
    """``h + block(RMSNorm(h))`` of a ``Mamba2Layer`` (mamba2.py) with its weights, in one Function."""
    spec = _Spec(layer.dims, layer.ssm_input, layer.norm.eps)
    device_type = h.device.type
    if torch.is_autocast_enabled(device_type):
        # autocast: the Function casts for itself (the wide work in the autocast dtype, the residual
        # stream, norms' factors, SSD mixing and weight-gradient sums in fp32), with autocast off inside
        spec = _Spec(layer.dims, layer.ssm_input, layer.norm.eps, torch.get_autocast_dtype(device_type))
        with full_precision(device_type):
            return _Mamba2Layer.apply(at_least_fp32(h), layer.norm.weight, layer.in_proj.weight,
                                      layer.conv_weight, layer.conv_bias, layer.dt_bias, layer.A_log, layer.D,
                                      layer.gate_norm.weight, layer.out_proj.weight, spec)
    return _Mamba2Layer.apply(h, layer.norm.weight, layer.in_proj.weight, layer.conv_weight, layer.conv_bias,
                              layer.dt_bias, layer.A_log, layer.D, layer.gate_norm.weight,
                              layer.out_proj.weight, spec)
