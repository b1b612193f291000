"""The fast pure-PyTorch training path of the Mamba2 mixer: one autograd Function with a
hand-written backward, run over batch tiles.

Same mathematics as ``Mamba2Layer``'s modular forward (which the tests compare it with, values
and gradients), organised for speed on CPU, where these small models are bound by the elementwise
work and the memory traffic around the matmuls, not by the matmuls:

* the in-projection is split by rows into z, x, B, C and dt so every operand of the small
  batched matmuls is contiguous (strided operands send ``bmm`` down a slow path);
* the causal convolution is K fused multiply-adds on shifted views of the (N, S, C) layout,
  with SiLU's derivative fused into the backward (``silu_backward``);
* the SSD uses the quadratic form with dt and D folded into the (S, S) mixing matrix, so the
  only work on the wide x is one batched matmul each way;
* the gated RMSNorm's scale is folded into the out-projection and the per-token norm factor is
  applied after it (on d_model channels instead of D_in);
* the batch is processed in tiles of about ``TILE_TOKENS`` tokens, so each tile's
  intermediates stay in cache and come from the allocator's reusable heap (no page faults on
  fresh multi-MB blocks), and no autograd graph is built inside the mixer; each direction makes
  two passes over the tiles around the small (N, H, S, S) SSD work, which is done once for the
  whole batch;
* the layer's pre-norm and its residual add are inside the Function too (the norm scales are
  folded into the projections, the per-token factors applied on the narrow side);
* the per-channel dot products of the kernel gradient use one fused reduction per tap
  (``_channel_dots``).

It covers the linear dt source (mamba2, -allone, -posenc, -residual, -gated). It is used when no
hook point of the layer is active; probes get the modular path, which exposes every site.
Sequences longer than the quadratic threshold also use the modular (chunked) path.

Measured at the paper's training shapes on a 2-core CPU (``benchmarks/RESULTS-archs.md``): about
5-12x the throughput of Hugging Face's pure-PyTorch Mamba2 and 0.5-0.9x that of the same-size
Transformer.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

__all__ = ["MixerSpec", "mixer_forward", "TILE_TOKENS"]

TILE_TOKENS = 8192  # tokens per batch tile on CPU (2-8 MB per wide intermediate at the paper shapes)


@dataclass(frozen=True)
class MixerSpec:
    d_inner: int
    d_state: int
    n_heads: int
    ssm_input: str   # "conv" | "residual" | "gated"
    norm_eps: float


def _conv(inp, wt, bias):
    """pre[:, t] = bias + sum_k wt[k] * inp[:, t - (K-1) + k] on (n, S, c); wt (K, c)."""
    length, width = inp.shape[1], wt.shape[0]
    pre = torch.addcmul(bias, inp, wt[width - 1])
    for k in range(width - 1):
        s = width - 1 - k
        if s < length:
            pre[:, s:].addcmul_(inp[:, : length - s], wt[k])
    return pre


def _conv_input_grad(g, wt, base=None):
    """Adjoint of ``_conv`` with respect to its input (plus ``base`` if given)."""
    length, width = g.shape[1], wt.shape[0]
    out = torch.addcmul(base, g, wt[width - 1]) if base is not None else g * wt[width - 1]
    for k in range(width - 1):
        s = width - 1 - k
        if s < length:
            out[:, : length - s].addcmul_(g[:, s:], wt[k])
    return out


def _channel_dots(a, b):
    """(sum over rows of a * b, sum over rows of b) per channel, for 2-D (rows, c) a and b.

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


def _conv_param_grads(inp, g, gwt, gb):
    """Accumulate the kernel gradient into gwt (K, c), sum over (n, t) of inp[:, t-s] * g[:, t]
    for tap k = K-1-s, and the bias gradient into gb (c). Overwrites ``g`` (no longer needed).

    Each tap is one dot product over the flattened (n*S, c) rows shifted by s. Flattening would
    pair the last s positions of a sample with the first s of the next; those pairs vanish
    because the first s positions of ``g`` are zeroed (progressively, taps in order of s)."""
    n, length, c = g.shape
    width = gwt.shape[0]
    a2, g2 = inp.reshape(-1, c), g.view(-1, c)
    dot, total = _channel_dots(a2, g2)
    gwt[width - 1] += dot
    if gb is not None:
        gb += total
    for s in range(1, min(width, length)):
        g[:, s - 1].zero_()
        gwt[width - 1 - s] += _channel_dots(a2[:-s], g2[s:])[0]


def _heads(t, n, length, heads):
    """(n, S, H*P) -> (n, H, S, P) view."""
    return t.view(n, length, heads, -1).transpose(1, 2)


def _unheads(t, n, length):
    """(n, H, S, P) -> (n, S, H*P)."""
    return t.transpose(1, 2).reshape(n, length, -1)


def _ssd_mixing(dtin, dt_bias, A, CB, D, causal, eye):
    """The small (N, H, S, S) part of the SSD for the whole batch: dt, L, S = L o CB and the
    mixing matrix M = S * dt_j + D I (so y = M @ x)."""
    heads = dtin.shape[-1]
    dt = F.softplus(dtin + dt_bias)                                       # (N, S, H)
    dt_h = dt.transpose(1, 2)                                             # (N, H, S)
    cum = torch.cumsum(dt_h * A.view(1, heads, 1), dim=-1)
    L = torch.exp((cum.unsqueeze(-1) - cum.unsqueeze(-2)).masked_fill_(~causal, float("-inf")))
    Smat = L * CB.unsqueeze(1)                                            # (N, H, S, S)
    M = Smat * dt_h.unsqueeze(2) + D.view(1, heads, 1, 1) * eye
    return dt, L, Smat, M


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


class _Mamba2Mixer(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h, norm_in_w, w_in, conv_w, conv_b, dt_bias, A_log, D, norm_w, w_out, spec: MixerSpec):
        h = h.contiguous()
        n_all, length, d = h.shape
        din, nst, heads = spec.d_inner, spec.d_state, spec.n_heads
        rows = _row_slices(din, nst, heads)
        chans = _chan_slices(din, nst)
        # pre-norm u = h * r_in * norm_in_w: the per-token factor on h, the scale folded into in_proj
        r_in = torch.rsqrt(torch.linalg.vector_norm(h, dim=-1).square_().div_(d).add_(spec.norm_eps))
        u = h * r_in.unsqueeze(-1)
        w_in_eff = w_in * norm_in_w
        wt = conv_w.t().contiguous()                       # (K, C)
        A = -torch.exp(A_log)
        w_eff = w_out * norm_w                              # gated-norm scale folded into out_proj
        causal = torch.ones(length, length, dtype=torch.bool, device=h.device).tril_()
        eye = torch.eye(length, dtype=h.dtype, device=h.device)
        out = torch.empty(n_all, length, d, dtype=h.dtype, device=h.device)
        w_p = {p: w_in_eff[rows[p]] for p in rows}                 # per-part weights (views)
        wt_p = {p: wt[:, chans[p]] for p in chans}
        b_p = {p: conv_b[chans[p]] for p in chans}
        save = any(ctx.needs_input_grad)
        tiles = _tiles(n_all, length, h.is_cuda)
        # pass 1, per batch tile: projections, convolution, SSM inputs, C B^T
        dtin = torch.mm(u.view(-1, d), w_p["dt"].t()).view(n_all, length, heads)
        CB = torch.empty(n_all, length, length, dtype=h.dtype, device=h.device)
        saved = []
        for i0, i1 in tiles:
            n = i1 - i0
            u2 = u[i0:i1].view(n * length, d)
            z = torch.mm(u2, w_p["z"].t()).view(n, length, din)
            inp, pre, ssm = {}, {}, {}
            for p in ("x", "B", "C"):
                inp[p] = torch.mm(u2, w_p[p].t()).view(n, length, -1)
                pre[p] = _conv(inp[p], wt_p[p], b_p[p])
                act = F.silu(pre[p])
                if spec.ssm_input == "residual":
                    act += inp[p]
                elif spec.ssm_input == "gated":
                    act *= inp[p]
                ssm[p] = act
            torch.bmm(ssm["C"], ssm["B"].transpose(1, 2), out=CB[i0:i1])
            saved.append([z, inp, pre, ssm])
        # the small (N, H, S, S) work once for the whole batch
        dt, L, Smat, M = _ssd_mixing(dtin, dt_bias, A, CB, D, causal, eye)
        # pass 2, per batch tile: y = M @ x, gate, norm, out-projection, residual
        for (i0, i1), tile in zip(tiles, saved):
            n = i1 - i0
            z, ssm = tile[0], tile[3]
            if heads == 1:
                y = torch.bmm(M[i0:i1].squeeze(1), ssm["x"])
            else:
                y = _unheads(torch.matmul(M[i0:i1], _heads(ssm["x"], n, length, heads)), n, length)
            sz = F.silu(z)
            yz = y * sz
            r = torch.rsqrt(torch.linalg.vector_norm(yz, dim=-1).square_().div_(din).add_(spec.norm_eps))
            o = torch.mm(yz.view(-1, din), w_eff.t())                         # (T, d)
            # residual add fused: out = h + r * o
            torch.addcmul(h[i0:i1].view(-1, d), o, r.view(-1, 1), out=out[i0:i1].view(-1, d))
            tile += [y, sz, yz, r, o]
        if save:
            ctx.spec, ctx.tiles, ctx.saved = spec, tiles, saved
            ctx.A, ctx.w_eff, ctx.w_in_eff = A, w_eff, w_in_eff
            ctx.save_for_backward(h, r_in, u, norm_in_w, w_in, conv_w, conv_b, dt_bias, D, norm_w, w_out,
                                  dtin, dt, L, CB, Smat, M)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        (h, r_in, u, norm_in_w, w_in, conv_w, conv_b, dt_bias, D, norm_w, w_out,
         dtin, dt, L, CB, Smat, M) = ctx.saved_tensors
        spec, A, w_eff, w_in_eff = ctx.spec, ctx.A, ctx.w_eff, ctx.w_in_eff
        n_all, length, d = u.shape
        din, nst, heads = spec.d_inner, spec.d_state, spec.n_heads
        rows = _row_slices(din, nst, heads)
        chans = _chan_slices(din, nst)
        wt = conv_w.t().contiguous()
        grad_out = grad_out.contiguous()
        need = ctx.needs_input_grad
        g_u = torch.empty_like(u)
        g_w_in = torch.zeros_like(w_in)                    # gradient of w_in_eff until the end
        g_wt = torch.zeros_like(wt)
        g_b = torch.zeros_like(conv_b)
        g_w_eff = torch.zeros_like(w_eff)
        w_p = {p: w_in_eff[rows[p]] for p in rows}
        g_w_p = {p: g_w_in[rows[p]] for p in rows}
        wt_p = {p: wt[:, chans[p]] for p in chans}
        g_wt_p = {p: g_wt[:, chans[p]] for p in chans}
        g_b_p = {p: g_b[chans[p]] for p in chans}
        g_M = torch.empty_like(M)
        pending = []
        # pass 1, per tile: out-projection, norm and gate backward; y = M @ x backward
        for (i0, i1), (z, inp, pre, ssm, y, sz, yz, r, o) in zip(ctx.tiles, ctx.saved):
            n = i1 - i0
            g2 = grad_out[i0:i1].view(n * length, d)
            # out = h + r * (yz @ w_eff^T),  r = (mean(yz^2) + eps)^-1/2
            g_o = g2 * r.view(-1, 1)
            g_r = torch.linalg.vecdot(g2, o, dim=-1)                           # (T,)
            g_w_eff.addmm_(g_o.t(), yz.view(-1, din))
            g_yz = torch.mm(g_o, w_eff)                                       # (T, Din)
            g_yz.addcmul_(yz.view(-1, din), (g_r * r.view(-1).pow(3)).div_(-din).view(-1, 1))
            g_yz = g_yz.view(n, length, din)
            g_y = g_yz * sz
            g_z = torch.ops.aten.silu_backward(g_yz.mul_(y), z)               # g_yz reused as g_yz*y
            if heads == 1:
                torch.bmm(g_y, ssm["x"].transpose(1, 2), out=g_M[i0:i1].squeeze(1))
                g_x = torch.bmm(M[i0:i1].squeeze(1).transpose(1, 2), g_y)
            else:
                g_yh = _heads(g_y, n, length, heads)
                g_M[i0:i1] = torch.matmul(g_yh, _heads(ssm["x"], n, length, heads).transpose(-1, -2))
                g_x = _unheads(torch.matmul(M[i0:i1].transpose(-1, -2), g_yh), n, length)
            pending.append((g_z, g_x))
        # the small (N, H, S, S) backward once for the whole batch
        g_CB, g_dtin, g_D, g_A, g_dt_bias = _ssd_mixing_backward(g_M, dtin, dt_bias, A, dt, L, CB, Smat)
        g_dtin = g_dtin.reshape(-1, heads)
        # pass 2, per tile: B and C gradients, SiLU and convolution backward, in-projection
        for (i0, i1), (z, inp, pre, ssm, *_), (g_z, g_x) in zip(ctx.tiles, ctx.saved, pending):
            n = i1 - i0
            u2 = u[i0:i1].view(n * length, d)
            g_ssm = {"x": g_x,
                     "C": torch.bmm(g_CB[i0:i1], ssm["B"]),
                     "B": torch.bmm(g_CB[i0:i1].transpose(1, 2), ssm["C"])}
            g_parts = {"z": g_z.view(-1, din)}
            for p in ("x", "B", "C"):
                gs = g_ssm[p]
                if spec.ssm_input == "gated":      # ssm = silu(pre) * inp
                    g_pre = torch.ops.aten.silu_backward(gs * inp[p], pre[p])
                    base = gs * F.silu(pre[p])
                elif spec.ssm_input == "residual":  # ssm = silu(pre) + inp
                    g_pre = torch.ops.aten.silu_backward(gs, pre[p])
                    base = gs
                else:
                    g_pre = torch.ops.aten.silu_backward(gs, pre[p])
                    base = None
                g_parts[p] = _conv_input_grad(g_pre, wt_p[p], base).view(n * length, -1)
                if need[3]:
                    _conv_param_grads(inp[p], g_pre, g_wt_p[p], g_b_p[p])
                else:
                    g_b_p[p] += g_pre.sum((0, 1))
            g_u2 = g_u[i0:i1].view(n * length, d)
            torch.mm(g_parts["z"], w_p["z"], out=g_u2)
            g_w_p["z"].addmm_(g_parts["z"].t(), u2)
            for p in ("x", "B", "C"):
                g_w_p[p].addmm_(g_parts[p].t(), u2)
                g_u2.addmm_(g_parts[p], w_p[p])
        ctx.tiles = ctx.saved = None
        g_u2 = g_u.view(-1, d)
        g_w_p["dt"].addmm_(g_dtin.t(), u.view(-1, d))
        g_u2.addmm_(g_dtin, w_p["dt"])
        # u = h * r_in, r_in = (mean(h^2) + eps)^-1/2; plus the residual path
        coef = torch.linalg.vecdot(g_u, h, dim=-1).mul_(r_in.pow(3)).div_(-d).unsqueeze(-1)
        g_h = torch.addcmul(grad_out, g_u, r_in.unsqueeze(-1)).addcmul_(h, coef)
        g_norm_in_w = (g_w_in * w_in).sum(0)
        g_w_in = g_w_in.mul_(norm_in_w)
        g_w_out = g_w_eff * norm_w
        g_norm_w = (g_w_eff * w_out).sum(0)
        return (g_h, g_norm_in_w, g_w_in, g_wt.t() if need[3] else None, g_b, g_dt_bias, g_A * A, g_D,
                g_norm_w, g_w_out, None)


def _row_slices(din: int, nst: int, heads: int) -> dict[str, slice]:
    """Rows of the in-projection: [z, x, B, C, dt] (mamba_ssm's order)."""
    return {"z": slice(0, din), "x": slice(din, 2 * din), "B": slice(2 * din, 2 * din + nst),
            "C": slice(2 * din + nst, 2 * din + 2 * nst), "dt": slice(2 * din + 2 * nst, 2 * din + 2 * nst + heads)}


def _chan_slices(din: int, nst: int) -> dict[str, slice]:
    """Channels of the convolution: [x, B, C]."""
    return {"x": slice(0, din), "B": slice(din, din + nst), "C": slice(din + nst, din + 2 * nst)}


def _tiles(n: int, length: int, on_gpu: bool) -> list[tuple[int, int]]:
    if on_gpu:
        return [(0, n)]
    step = max(1, TILE_TOKENS // max(length, 1))
    return [(i, min(i + step, n)) for i in range(0, n, step)]


def mixer_forward(h, norm_in_w, w_in, conv_w, conv_b, dt_bias, A_log, D, norm_w, w_out, spec: MixerSpec):
    """One whole layer on the residual stream h (N, S, d): h + mixer(RMSNorm(h))."""
    return _Mamba2Mixer.apply(h, norm_in_w, w_in, conv_w, conv_b, dt_bias, A_log, D, norm_w, w_out, spec)
