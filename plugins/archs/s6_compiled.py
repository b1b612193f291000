"""Mamba1's S6 scan on the CPU, compiled by ``torch.compile`` (inductor's C++ code) in fixed-length
chunks: the CPU stand-in for mamba_ssm's fused selective scan.

Why: the eager scan (``mamba1._SelectiveScan``) streams every (N, S, D_in, d_state) temporary
(decays, inputs, states, gradients) through memory a dozen times; that was 83% of a Mamba1
training step at the inverse shape and left Mamba1 at 0.28x Mamba2's steps/s. Compiled, each
chunk's decays, states and products stay in registers.

Why chunks of ``CHUNK`` tokens: inductor unrolls the recurrence, so compiling the whole sequence
takes minutes and once per sequence length; a fixed chunk compiles once (tens of seconds, then
cached on disk by inductor for every later process) and serves every length. The sequence is
padded to a whole number of chunks with dt = x = 0 (decay 1, input 0: the state passes through
unchanged, and the zero gradient of padded outputs adds nothing).

The forward keeps each chunk's entering state (N, S / CHUNK, D_in, d_state), 1/CHUNK of the
states; the backward recomputes the states inside a chunk from it, as mamba_ssm's kernel does
inside a block. Same function as the eager scan; the tests compare values and gradients.
"""

from __future__ import annotations

import logging
import os

import torch
import torch.nn.functional as F

__all__ = ["CHUNK", "ChunkedScan", "compiled_chunks", "chunk_forward", "chunk_backward", "serves",
           "try_compiled_scan", "unavailable_reason"]

log = logging.getLogger(__name__)

#: tokens per compiled chunk (8: the fastest of 4 / 8 / 29 measured on a 2-core Xeon, see the tests)
CHUNK = 8
#: batch rows per call of the compiled chunk: bounds the (rows, CHUNK, D_in, d_state) temporaries
TILE_STATES = 1 << 21
#: set to 0 to never compile (the eager scan then runs everywhere)
ENV_SWITCH = "ACHILLES_COMPILE_SCAN"

#: the compiled scan serves calls of at least this many state entries (N x S x D_in x d_state);
#: smaller ones (tests, single sequences) run the eager scan, whose cost is below the compile's
MIN_STATES = 1 << 22

_cache: dict[str, object] = {}


def serves(h: torch.Tensor, states_per_token: int) -> tuple[str, str] | None:
    """("compiled", why) when the compiled scan serves a layer's input h (N, S, d_model) with
    ``states_per_token`` (D_in x d_state) state entries per token, else None."""
    n, length = h.shape[:2]
    if h.device.type != "cpu" or h.dtype != torch.float32 or n * length * states_per_token < MIN_STATES:
        return None
    if compiled_chunks() is None:
        return None
    return "compiled", "a float32 CPU input large enough for the compiled scan"


def chunk_forward(x, dt, A, B, C, h):
    """One chunk from the state h (n, D_in, Nst): (y without the D x term (n, L, D_in), last state)."""
    dA = torch.exp(dt.unsqueeze(-1) * A)
    u = (dt * x).unsqueeze(-1) * B.unsqueeze(2)
    ys = []
    for t in range(x.shape[1]):
        h = dA[:, t] * h + u[:, t]
        ys.append((h * C[:, t].unsqueeze(1)).sum(-1))
    return torch.stack(ys, 1), h


def chunk_backward(x, dt, A, B, C, gy, h0, carry):
    """Gradients of one chunk, from its entering state h0 and ``carry`` = dL/d(its last state) from
    the chunks after it: (gx, g_dt, gA, gB, gC, the carry for the chunk before it)."""
    length = x.shape[1]
    dA = torch.exp(dt.unsqueeze(-1) * A)
    dtx = dt * x
    u = dtx.unsqueeze(-1) * B.unsqueeze(2)
    hs, h = [], h0
    for t in range(length):
        h = dA[:, t] * h + u[:, t]
        hs.append(h)
    gh = carry
    gx, g_dt, gB, gC = [None] * length, [None] * length, [None] * length, [None] * length
    gA = torch.zeros_like(A)
    for t in range(length - 1, -1, -1):
        gh = gy[:, t].unsqueeze(-1) * C[:, t].unsqueeze(1) + gh          # dL/dh_t
        gC[t] = (gy[:, t].unsqueeze(-1) * hs[t]).sum(1)
        g_dtx = (gh * B[:, t].unsqueeze(1)).sum(-1)
        gB[t] = (gh * dtx[:, t].unsqueeze(-1)).sum(1)
        e = gh * (hs[t - 1] if t > 0 else h0) * dA[:, t]                # dL/d(dt_t A)
        g_dt[t] = g_dtx * x[:, t] + (e * A).sum(-1)
        gx[t] = g_dtx * dt[:, t]
        gA = gA + (e * dt[:, t].unsqueeze(-1)).sum(0)
        gh = dA[:, t] * gh                                               # to h_{t-1}
    stack = lambda ts: torch.stack(ts, 1)  # noqa: E731
    return stack(gx), stack(g_dt), gA, stack(gB), stack(gC), gh


def unavailable_reason() -> str:
    """Why the compiled scan is not used here ("" when it is)."""
    if os.environ.get(ENV_SWITCH, "1") == "0":
        return f"{ENV_SWITCH}=0"
    return str(_cache.get("failed", ""))


def compiled_chunks():
    """(forward, backward) chunk functions compiled for the CPU, or None (``unavailable_reason``)."""
    if unavailable_reason():
        return None
    if "chunks" not in _cache:
        # dynamic: one compilation serves every batch size (tiles, the last batch, evaluation)
        fwd = torch.compile(chunk_forward, dynamic=True, fullgraph=True)
        bwd = torch.compile(chunk_backward, dynamic=True, fullgraph=True)
        log.info("compiling Mamba1's selective scan for this CPU (about a minute the first time on a "
                 "machine, then cached by torch.compile; %s=0 turns it off)", ENV_SWITCH)
        try:  # compile both now, on a small input, so that a failure falls back before training starts
            x, dt, B, C, gy = (torch.rand(2, CHUNK, k) for k in (4, 4, 3, 3, 4))
            A, h = -torch.rand(4, 3), torch.zeros(2, 4, 3)
            with torch.no_grad():  # as inside the autograd Function, so the real calls reuse these
                _call(fwd, x, dt, A, B, C, h)
                _call(bwd, x, dt, A, B, C, gy, h, h)
        except Exception as exc:  # no C++ compiler, an inductor bug: the eager scan computes the same
            _disable(exc)
            return None
        _cache["chunks"] = (fwd, bwd)
    return _cache["chunks"]


def _disable(exc: Exception) -> None:
    _cache["failed"] = f"torch.compile failed here ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})"
    log.warning("Mamba1's compiled scan is off for this process: %s; the eager scan runs instead "
                "(same results, slower)", _cache["failed"])


def _call(fn, *args):
    """``fn(*args)`` on fresh contiguous copies and without duck sizing, so that slices' storage
    offsets, sizes that happen to be equal and requires_grad add no guards (each is a recompilation)."""
    args = [a.detach() if a.storage_offset() == 0 and a.is_contiguous()
            else a.detach().clone(memory_format=torch.contiguous_format) for a in args]
    with torch.fx.experimental._config.patch(use_duck_shape=False):
        return fn(*args)


def _pad(t: torch.Tensor, length: int) -> torch.Tensor:
    pad = length - t.shape[1]
    return F.pad(t, (0, 0, 0, pad)) if pad else t


def batch_tiles(n: int, per_sample: int, states: int) -> list[slice]:
    """Slices of a batch of ``n`` whose tiles hold about ``states`` entries (``per_sample`` each)."""
    rows = max(1, states // max(1, per_sample))
    return [slice(i, min(i + rows, n)) for i in range(0, n, rows)]


def _tiles(n: int, per_sample: int) -> list[slice]:
    return batch_tiles(n, per_sample, TILE_STATES)


class ChunkedScan(torch.autograd.Function):
    """The S6 scan (``mamba1.selective_scan_reference``) through the compiled chunk functions:
    x, dt (N, S, D_in) after softplus, A (D_in, Nst), B, C (N, S, Nst), D (D_in,) -> y (N, S, D_in)."""

    @staticmethod
    def forward(ctx, x, dt, A, B, C, D):
        fwd, _ = compiled_chunks()
        n, length, d_inner = x.shape
        padded = -(-length // CHUNK) * CHUNK
        xp, dtp, Bp, Cp = (_pad(t, padded) for t in (x, dt, B, C))
        y = x.new_empty(n, padded, d_inner)
        entering = x.new_empty(n, padded // CHUNK, d_inner, A.shape[1])
        for tile in _tiles(n, CHUNK * d_inner * A.shape[1]):
            h = x.new_zeros(tile.stop - tile.start, d_inner, A.shape[1])
            for i, c in enumerate(range(0, padded, CHUNK)):
                entering[tile, i] = h
                part = slice(c, c + CHUNK)
                y[tile, part], h = _call(fwd, xp[tile, part], dtp[tile, part], A, Bp[tile, part], Cp[tile, part], h)
        y = y[:, :length].addcmul_(x, D)
        ctx.save_for_backward(x, dt, A, B, C, D, entering)
        return y

    @staticmethod
    def backward(ctx, gy):
        _, bwd = compiled_chunks()
        x, dt, A, B, C, D, entering = ctx.saved_tensors
        n, length, d_inner = x.shape
        padded = entering.shape[1] * CHUNK
        xp, dtp, Bp, Cp, gyp = (_pad(t.contiguous(), padded) for t in (x, dt, B, C, gy))
        gx, g_dt = x.new_empty(n, padded, d_inner), x.new_empty(n, padded, d_inner)
        gB, gC = B.new_empty(n, padded, B.shape[2]), C.new_empty(n, padded, C.shape[2])
        gA = torch.zeros_like(A)
        for tile in _tiles(n, CHUNK * d_inner * A.shape[1]):
            carry = x.new_zeros(tile.stop - tile.start, d_inner, A.shape[1])
            for i in reversed(range(padded // CHUNK)):
                part = slice(i * CHUNK, (i + 1) * CHUNK)
                gx[tile, part], g_dt[tile, part], gA_part, gB[tile, part], gC[tile, part], carry = _call(
                    bwd, xp[tile, part], dtp[tile, part], A, Bp[tile, part], Cp[tile, part], gyp[tile, part],
                    entering[tile, i], carry)
                gA += gA_part
        gx = gx[:, :length].addcmul_(gy, D)
        gD = (gy * x).sum((0, 1))
        return gx, g_dt[:, :length], gA, gB[:, :length], gC[:, :length], gD


def try_compiled_scan(x, dt, A, B, C, D):
    """y of ``ChunkedScan``, or None if compiling failed on this machine (then never tried again in
    this process, with one warning)."""
    if compiled_chunks() is None:
        return None
    try:
        return ChunkedScan.apply(x, dt, A, B, C, D)
    except Exception as exc:  # no C++ compiler, an inductor bug: the eager scan computes the same
        _disable(exc)
        return None
