"""The SSD (state-space duality) core of Mamba2 in pure PyTorch: quadratic and chunked forms.

Notation follows appendix B of the Achilles' Heel paper and ``mamba_ssm/modules/ssd_minimal.py``
(one group: B and C are shared by all heads)::

    x  : (N, S, H, P)   SSM input X, split into H heads of P channels
    dt : (N, S, H)      step sizes after softplus
    A  : (H,)           negative decay rates (A = -exp(A_log))
    B  : (N, S, Nst)    input matrix   (the attention "key")
    C  : (N, S, Nst)    output matrix  (the attention "query")
    D  : (H,)           skip

The recurrence ``h_t = exp(dt_t A) h_{t-1} + dt_t B_t x_t``, ``y_t = C_t h_t + D x_t`` unrolls to
``y = S @ (x * dt) + D x`` with the SSM matrix (paper eq. 3-6, appendix B)::

    S[n, h, i, j] = exp(sum_{k=j+1..i} dt[n, k, h] A[h]) * (C_i . B_j)   for i >= j, else 0
                  = L[n, h, i, j] * (C B^T)[n, i, j]                   ("Mask o C B^T")

* ``ssd_quadratic`` materialises S (N, H, S, S): exact access for probes and the fastest form for
  short sequences (the paper's lengths are 8 and 29).
* ``ssd_chunked`` splits the sequence into chunks of ``chunk_size``: quadratic inside each chunk,
  a recurrence over chunk states between them (Listing 1 of the Mamba2 paper). Linear in S.

Both return ``y`` of shape (N, S, H, P) and agree to float rounding (tested).

Mamba1's S6 has the same kind of matrix with A per channel and state instead of per head:
``s6_matrix`` materialises it, one (S, S) matrix per channel (``mamba1.py`` uses it for its
``ssm.matrix`` site), and ``apply_s6_matrix`` applies it with the same convention (dt and D
outside).

Speed notes (these are what make the torch path fast on CPU). The decay mask is built from one
cumulative sum as ``exp(cum_i - cum_j)`` on the (S, S) grid rather than a masked (S, S) cumsum; the
step size and the D skip are folded into the small (N, H, S, S) mixing matrix
(``S @ (x * dt) + D x == (S * dt_j + D I) @ x``), so the only work on the wide (N, S, D_in) tensors
is a single batched matmul.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["decay_mask", "ssd_matrix", "mixing_matrix", "ssd_apply_matrix", "ssd_quadratic", "ssd_chunked",
           "s6_matrix", "apply_s6_matrix"]


def decay_mask(log_a: torch.Tensor) -> torch.Tensor:
    """``L[..., i, j] = exp(sum_{k=j+1..i} log_a[..., k])`` for i >= j, 0 above the diagonal.

    ``log_a`` (..., S) holds dt * A (<= 0). Built from one cumsum; the subtraction is only taken
    on the lower triangle (the upper one is set to -inf before exp), so nothing overflows.
    """
    length = log_a.shape[-1]
    cum = torch.cumsum(log_a, dim=-1)
    diff = cum.unsqueeze(-1) - cum.unsqueeze(-2)
    causal = torch.ones(length, length, dtype=torch.bool, device=log_a.device).tril_()
    return torch.exp(diff.masked_fill(~causal, float("-inf")))


def ssd_matrix(dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor) -> torch.Tensor:
    """The SSM matrix S = L o (C B^T), shape (N, H, S, S), lower-triangular."""
    log_a = (dt * A).transpose(1, 2)                      # (N, H, S)
    L = decay_mask(log_a)                                 # (N, H, S, S)
    # (contiguous operands: batched matmuls of column-sliced views take a much slower path)
    CB = torch.matmul(C.contiguous(), B.contiguous().transpose(1, 2)).unsqueeze(1)  # (N, 1, S, S)
    return L * CB                                         # CB is shared by all heads (one group)


def mixing_matrix(S: torch.Tensor, dt: torch.Tensor, D: torch.Tensor) -> torch.Tensor:
    """M = S * dt_j + D I, shape (N, H, S, S), so that ``S @ (x * dt) + D x == M @ x``."""
    heads, length = S.shape[1], S.shape[-1]
    M = S * dt.transpose(1, 2).unsqueeze(2)               # scale column j by dt_j
    eye = torch.eye(length, dtype=M.dtype, device=M.device)
    return M + D.view(1, heads, 1, 1) * eye


def ssd_apply_matrix(S: torch.Tensor, x: torch.Tensor, dt: torch.Tensor, D: torch.Tensor) -> torch.Tensor:
    """``y = S @ (x * dt) + D x`` for S (N, H, S, S), x (N, S, H, P), dt (N, S, H) -> (N, S, H, P).

    Computed as ``(S * dt_j + D I) @ x``: the scaling and the skip touch only the small matrix.
    """
    n, length, heads, p = x.shape
    M = mixing_matrix(S, dt, D)
    if heads == 1:  # no head transpose needed: (N, S, S) @ (N, S, P)
        return torch.matmul(M.squeeze(1), x.reshape(n, length, p).contiguous()).view(n, length, 1, p)
    y = torch.matmul(M, x.transpose(1, 2))                # (N, H, S, P)
    return y.transpose(1, 2)


def ssd_quadratic(x: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor,
                  C: torch.Tensor, D: torch.Tensor) -> torch.Tensor:
    """Quadratic ("attention-like") SSD: y = (L o C B^T) @ (x * dt) + D x."""
    return ssd_apply_matrix(ssd_matrix(dt, A, B, C), x, dt, D)


def ssd_chunked(x: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor,
                C: torch.Tensor, D: torch.Tensor, chunk_size: int = 64) -> torch.Tensor:
    """Chunked SSD (Mamba2 paper, Listing 1), linear in the sequence length.

    A sequence whose length is not a multiple of ``chunk_size`` is zero-padded at the end
    (dt = 0 there: no decay and no input), which leaves every real position unchanged.
    """
    n, length, heads, p = x.shape
    nst = B.shape[-1]
    q = int(chunk_size)
    pad = (-length) % q
    if pad:
        x = F.pad(x, (0, 0, 0, 0, 0, pad))
        dt = F.pad(dt, (0, 0, 0, pad))
        B = F.pad(B, (0, 0, 0, pad))
        C = F.pad(C, (0, 0, 0, pad))
    c = (length + pad) // q
    xdt = (x * dt.unsqueeze(-1)).view(n, c, q, heads, p).permute(0, 3, 1, 2, 4)  # (N, H, c, q, P)
    Bc = B.view(n, c, q, nst)
    Cc = C.view(n, c, q, nst)
    log_a = (dt * A).view(n, c, q, heads).permute(0, 3, 1, 2)                    # (N, H, c, q)
    cum = torch.cumsum(log_a, dim=-1)

    # 1. within each chunk: the quadratic form on (q, q) blocks
    L = decay_mask(log_a)                                                        # (N, H, c, q, q)
    CB = torch.matmul(Cc, Bc.transpose(-1, -2)).unsqueeze(1)                     # (N, 1, c, q, q)
    y_diag = torch.matmul(L * CB, xdt)                                           # (N, H, c, q, P)

    # 2. the state each chunk leaves behind (from its own inputs only)
    decay_to_end = torch.exp(cum[..., -1:] - cum)                                # (N, H, c, q)
    states = torch.matmul(Bc.transpose(-1, -2).unsqueeze(1),
                          xdt * decay_to_end.unsqueeze(-1))                      # (N, H, c, Nst, P)

    # 3. states entering each chunk: a recurrence over chunks, as one (c x c) decay matrix
    chunk_log_a = cum[..., -1]                                                   # (N, H, c)
    entering = decay_mask(F.pad(chunk_log_a, (1, 0)))[..., :-1, 1:]              # (N, H, c, c)
    # entering[i, j] = exp(sum of chunk_log_a over chunks j+1..i-1): decay from the end of
    # chunk j to the start of chunk i for j < i, 0 for j >= i (the padded mask shifted by one).
    prev = torch.matmul(entering, states.reshape(n, heads, c, nst * p)).view(n, heads, c, nst, p)

    # 4. contribution of the entering state to each position of the chunk
    y_off = torch.matmul(Cc.unsqueeze(1), prev) * torch.exp(cum).unsqueeze(-1)   # (N, H, c, q, P)

    y = (y_diag + y_off).permute(0, 2, 3, 1, 4).reshape(n, c * q, heads, p)[:, :length]
    return y + x[:, :length] * D.view(1, 1, heads, 1)


# -- Mamba1 (S6): one matrix per channel -----------------------------------------------------
def s6_matrix(dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor) -> torch.Tensor:
    """Mamba1's per-channel token-mixing matrix (N, D_in, S, S), lower-triangular, for dt (N, S, D_in)
    after softplus, A (D_in, Nst), B and C (N, S, Nst) (see mamba1.py's docstring)::

        S[n, d, t, s] = sum_k C[t, k] B[s, k] exp(A[d, k] (cum_t - cum_s)),  cum = cumsum(dt[:, d]), s <= t
    """
    length = dt.shape[1]
    cum = torch.cumsum(dt, dim=1).transpose(1, 2)                # (N, D_in, S)
    diff = cum.unsqueeze(-1) - cum.unsqueeze(-2)                 # (N, D_in, S, S): cum_t - cum_s
    causal = torch.ones(length, length, dtype=torch.bool, device=dt.device).tril_()
    S = None
    for k in range(A.shape[1]):
        decay = torch.exp((diff * A[:, k, None, None]).masked_fill(~causal, float("-inf")))
        term = decay * (C[:, :, k, None] * B[:, None, :, k]).unsqueeze(1)
        S = term if S is None else S + term
    return S


def apply_s6_matrix(S: torch.Tensor, x: torch.Tensor, dt: torch.Tensor, D: torch.Tensor) -> torch.Tensor:
    """``y[:, d] = S[:, d] @ (dt[:, d] * x[:, d]) + D[d] x[:, d]`` -> (N, S, D_in)."""
    return torch.matmul(S, (dt * x).transpose(1, 2).unsqueeze(-1)).squeeze(-1).transpose(1, 2) + x * D
