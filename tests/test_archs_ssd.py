"""The SSD core and the causal convolution: quadratic == chunked == a sequential recurrence."""

import pytest
import torch
import torch.nn.functional as F
from torch.func import vmap

from achilles.plugins.archs.ops import causal_conv
from achilles.plugins.archs.ssd import decay_mask, ssd_chunked, ssd_matrix, ssd_quadratic


def causal_conv_reference(x, weight, bias, silu=True):
    """The same convolution through ``F.conv1d`` on the transposed input, truncated to S outputs."""
    width = weight.shape[1]
    y = F.conv1d(x.transpose(1, 2), weight.unsqueeze(1), bias, padding=width - 1,
                 groups=weight.shape[0])[..., : x.shape[1]].transpose(1, 2)
    return F.silu(y) if silu else y


def causal_conv_under_vmap(x, weight, bias, silu=True):
    """``causal_conv`` inside a torch.func transform (a batch of one), where it runs plain autograd."""
    return vmap(lambda xi: causal_conv(xi, weight, bias, silu))(x.unsqueeze(0)).squeeze(0)


def recurrence(x, dt, A, B, C, D):
    """h_t = exp(dt_t A) h_{t-1} + dt_t B_t x_t ;  y_t = C_t h_t + D x_t  (per head, one group)."""
    n, length, heads, p = x.shape
    h = torch.zeros(n, heads, p, B.shape[-1], dtype=x.dtype)
    ys = []
    for t in range(length):
        decay = torch.exp(dt[:, t] * A)                                     # (n, H)
        h = decay[..., None, None] * h + (dt[:, t, :, None, None] * x[:, t, :, :, None] * B[:, t, None, None, :])
        ys.append((h * C[:, t, None, None, :]).sum(-1) + D[None, :, None] * x[:, t])
    return torch.stack(ys, dim=1)


def random_ssm(n=3, length=21, heads=2, p=4, nst=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    kw = dict(dtype=torch.float64, generator=g)
    x = torch.randn(n, length, heads, p, **kw)
    dt = torch.rand(n, length, heads, **kw) * 0.6 + 0.01
    A = -(torch.rand(heads, **kw) * 4 + 0.5)
    B = torch.randn(n, length, nst, **kw)
    C = torch.randn(n, length, nst, **kw)
    D = torch.randn(heads, **kw)
    return x, dt, A, B, C, D


@pytest.mark.parametrize("heads,length", [(1, 8), (2, 21), (3, 1)])
def test_quadratic_matches_recurrence(heads, length):
    args = random_ssm(length=length, heads=heads)
    torch.testing.assert_close(ssd_quadratic(*args), recurrence(*args), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("chunk", [1, 4, 7, 21, 64])
def test_chunked_matches_quadratic_and_recurrence(chunk):
    args = random_ssm(length=21, heads=2)
    y = ssd_chunked(*args, chunk_size=chunk)
    torch.testing.assert_close(y, ssd_quadratic(*args), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(y, recurrence(*args), rtol=1e-10, atol=1e-10)


def test_chunked_gradients_match_quadratic():
    args = [a.requires_grad_() for a in random_ssm(length=13)]
    g1 = torch.autograd.grad(ssd_chunked(*args, chunk_size=4).sin().sum(), args)
    g2 = torch.autograd.grad(ssd_quadratic(*args).sin().sum(), args)
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)


def test_ssm_matrix_is_the_masked_product():
    x, dt, A, B, C, D = random_ssm(n=2, length=6, heads=2)
    S = ssd_matrix(dt, A, B, C)
    assert S.shape == (2, 2, 6, 6)
    assert torch.all(S.triu(1) == 0)
    for i in range(6):
        for j in range(i + 1):
            decay = torch.exp((dt[:, j + 1:i + 1] * A).sum(1))             # (n, H)
            expect = decay * (C[:, i] * B[:, j]).sum(-1, keepdim=True)
            torch.testing.assert_close(S[:, :, i, j], expect)


def test_decay_mask_stays_finite_for_strong_decay():
    L = decay_mask(torch.full((1, 300), -50.0, dtype=torch.float32))
    assert torch.isfinite(L).all() and torch.all(L.triu(1) == 0) and torch.all(L.diagonal(dim1=-2, dim2=-1) == 1)


@pytest.mark.parametrize("width,length", [(4, 9), (4, 2), (1, 5), (6, 3)])
def test_causal_conv_matches_conv1d(width, length):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, length, 10, dtype=torch.float64, generator=g, requires_grad=True)
    w = torch.randn(10, width, dtype=torch.float64, generator=g, requires_grad=True)
    b = torch.randn(10, dtype=torch.float64, generator=g, requires_grad=True)
    for silu in (True, False):
        outs = [f(x, w, b, silu) for f in (causal_conv, causal_conv_under_vmap, causal_conv_reference)]
        grads = [torch.autograd.grad(o.sin().sum(), (x, w, b)) for o in outs]
        for o, g_ in zip(outs[1:], grads[1:]):
            torch.testing.assert_close(outs[0], o)
            for a, c in zip(grads[0], g_):
                torch.testing.assert_close(a, c)


def test_causal_conv_with_strided_input():
    # the in-projection output is split into strided views; the conv must accept them
    big = torch.randn(2, 7, 30, dtype=torch.float64, requires_grad=True)
    w = torch.randn(12, 4, dtype=torch.float64)
    b = torch.randn(12, dtype=torch.float64)
    y = causal_conv(big[..., 5:17], w, b)
    torch.testing.assert_close(y, causal_conv_reference(big[..., 5:17], w, b))
    y.sum().backward()
    assert big.grad[..., :5].abs().sum() == 0 and big.grad[..., 5:17].abs().sum() > 0
