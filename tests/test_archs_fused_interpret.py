"""How the fused path maps a Mamba2 block onto mamba_ssm's kernels (layouts, dt_bias and the
softplus, D, the gate, the chunk size), checked on CPU before any GPU: the kernels' Triton code
runs under Triton's interpreter against the torch path of the same layer.

Opt-in, never in the default run (it needs triton, ~1 GB, and the kernels' sources; see
tests/triton_kernels.py and benchmarks/README.md)::

    ACHILLES_MAMBA_SSM_SRC=~/src/mamba ACHILLES_CAUSAL_CONV1D_SRC=~/src/causal-conv1d \\
        pytest -m triton_interpret tests/test_archs_fused_interpret.py

Forward only: the kernels' backward reaches CUDA-only calls even under the interpreter; the
gradients are compared on a GPU by tests/test_archs_fused.py (marker ``gpu``).
"""

import pytest
import torch
import torch.nn.functional as F

import achilles
from achilles.plugins.archs import fused

import triton_kernels

pytestmark = pytest.mark.triton_interpret


@pytest.fixture(scope="module")
def kernels():
    try:
        return triton_kernels.load()
    except triton_kernels.KernelsUnavailable as exc:  # asked for explicitly: say what is missing
        pytest.fail(f"cannot run the Triton kernels on CPU: {exc}", pytrace=False)


@pytest.fixture
def on_cpu(kernels, monkeypatch):
    """fused.py's kernel lookup answers with the interpreted kernels; CPU tensors pass torch.cuda.device."""
    monkeypatch.setitem(fused._cache, "kernels", kernels)
    monkeypatch.setitem(fused._cache, "reason", "")
    monkeypatch.setattr(torch.cuda, "device", triton_kernels.cpu_aware_cuda_device(torch.cuda.device))
    return kernels


def recurrence(x, dt, A, B, C, D):
    """h_t = exp(dt_t A) h_{t-1} + dt_t B_t x_t ;  y_t = C_t h_t + D x_t (one group)."""
    n, length, heads, p = x.shape
    h = torch.zeros(n, heads, p, B.shape[-1], dtype=x.dtype)
    ys = []
    for t in range(length):
        h = torch.exp(dt[:, t] * A)[..., None, None] * h + dt[:, t, :, None, None] * x[:, t, :, :, None] * B[:, t, None, None, :]
        ys.append((h * C[:, t, None, None, :]).sum(-1) + D[None, :, None] * x[:, t])
    return torch.stack(ys, 1)


def test_chunk_scan_kernel_matches_a_plain_recurrence(on_cpu):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 29, 1, 64, generator=g)
    dt_raw, dt_bias = torch.randn(2, 29, 1, generator=g), torch.randn(1, generator=g)
    A, D = -torch.rand(1, generator=g) - 0.5, torch.randn(1, generator=g)
    B, C = torch.randn(2, 29, 16, generator=g), torch.randn(2, 29, 16, generator=g)
    y = fused.chunk_scan(x, dt_raw, A, B, C, D, dt_bias, chunk_size=16)
    torch.testing.assert_close(y, recurrence(x, F.softplus(dt_raw + dt_bias), A, B, C, D), rtol=1e-4, atol=1e-5)


def _layer(name, **settings):
    torch.manual_seed(0)
    model = achilles.create_model(name, vocab_size=37, d_model=16, d_state=8, chunk_size=8, **settings)
    layer = model.layers[0]
    with torch.no_grad():  # move every per-channel parameter off its default, so a dropped one shows
        for p in (layer.dt_bias, layer.D, layer.conv_bias, layer.norm.weight, layer.gate_norm.weight):
            p.add_(0.3 * torch.randn_like(p))
        layer.A_log.copy_(torch.log(torch.rand_like(layer.A_log) * 2 + 0.5))
    return layer


@pytest.mark.parametrize("name,heads", [("mamba2", 1), ("mamba2", 2), ("mamba2-allone", 1),
                                        ("mamba2-residual", 2), ("mamba2-gated", 1), ("mamba2-global", 2)])
@pytest.mark.parametrize("length", [5, 21])  # one partial chunk; several chunks and a partial one
def test_fused_layer_matches_the_torch_path(on_cpu, name, heads, length):
    layer = _layer(name, n_heads=heads)
    h = torch.randn(3, length, 16, generator=torch.Generator().manual_seed(length))
    with torch.no_grad():
        expect = layer.forward_modular(h)
        got = fused.mamba2_layer_forward(layer, h)
    torch.testing.assert_close(got, expect, rtol=1e-4, atol=1e-5)


def test_the_plain_block_goes_through_the_one_call_kernel(on_cpu, monkeypatch):
    """mamba2 uses mamba_split_conv1d_scan_combined; the variants use the separate kernels."""
    calls = []
    for name in ("mamba_split_conv1d_scan_combined", "mamba_chunk_scan_combined"):
        original = getattr(on_cpu, name)
        monkeypatch.setattr(on_cpu, name, lambda *a, _f=original, _n=name, **k: calls.append(_n) or _f(*a, **k))
    h = torch.randn(2, 5, 16)
    with torch.no_grad():
        fused.mamba2_layer_forward(_layer("mamba2"), h)
        fused.mamba2_layer_forward(_layer("mamba2-residual"), h)
    assert calls == ["mamba_split_conv1d_scan_combined", "mamba_chunk_scan_combined"]


def test_without_causal_conv1d_the_block_runs_the_torch_convolution_and_the_ssd_kernel(on_cpu, monkeypatch):
    monkeypatch.setattr(on_cpu, "causal_conv1d_fn", None)
    monkeypatch.setattr(on_cpu, "mamba_split_conv1d_scan_combined", None)  # must not be reached
    layer = _layer("mamba2", n_heads=2)
    h = torch.randn(3, 21, 16)
    with torch.no_grad():
        torch.testing.assert_close(fused.mamba2_layer_forward(layer, h), layer.forward_modular(h), rtol=1e-4, atol=1e-5)
