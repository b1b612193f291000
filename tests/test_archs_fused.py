"""The fused CUDA path (mamba-ssm, causal-conv1d, flash-attn) against the torch path.

Runs only where CUDA and the ``cuda`` extra are installed: ``pytest -m gpu tests/test_archs_fused.py``.
"""

import pytest
import torch

import achilles
from achilles.plugins.archs import fused

pytestmark = pytest.mark.gpu


def _require_kernels():
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    if fused.kernels() is None:
        pytest.skip(f"fused kernels unavailable: {fused.unavailable_reason()}")


# (arch, shape): the paper's two shapes at reduced batch, plus a long sequence (chunked scan)
CASES = [(name, shape) for name in ["mamba2", "mamba2-allone", "mamba2-posenc", "mamba2-residual",
                                    "mamba2-gated", "mamba2-global", "transformer", "conv-transformer",
                                    "transformer-rope", "transformer-nope"]
         for shape in [(64, 8, 32), (32, 29, 128), (4, 300, 64)]]


@pytest.mark.parametrize("name,shape", CASES)
def test_fused_matches_torch_forward_and_gradients(name, shape):
    _require_kernels()
    batch, length, d = shape
    torch.manual_seed(0)
    ref = achilles.create_model(name, d_model=d, max_len=512, backend="torch").cuda()
    torch.manual_seed(0)
    fast = achilles.create_model(name, d_model=d, max_len=512, backend="fused").cuda()
    fast.load_state_dict(ref.state_dict())
    tokens = torch.randint(0, 256, (batch, length), device="cuda")
    weights = torch.randn(batch, length, 256, device="cuda")
    outs = []
    for model in (ref, fast):
        model.zero_grad()
        logits = model(tokens)
        (logits * weights).sum().backward()
        outs.append((logits.detach(), {k: p.grad.detach().clone() for k, p in model.named_parameters()}))
    (ref_out, ref_grads), (fast_out, fast_grads) = outs
    scale = ref_out.abs().max()
    assert (fast_out - ref_out).abs().max() <= 2e-3 * scale + 1e-4
    for key, g in ref_grads.items():
        err = (fast_grads[key] - g).abs().max()
        assert err <= 5e-3 * g.abs().max() + 1e-5, (key, err.item(), g.abs().max().item())


def test_hooked_layers_fall_back_to_torch_on_gpu():
    _require_kernels()
    torch.manual_seed(0)
    model = achilles.create_model("mamba2", backend="fused").cuda()
    with model.hooks(read=["layers.0.ssm.matrix"]) as cache:
        model(torch.randint(0, 256, (2, 8), device="cuda"))
    assert cache["layers.0.ssm.matrix"].shape == (2, 1, 8, 8)


def test_fused_backend_rejects_cpu_input():
    _require_kernels()
    model = achilles.create_model("mamba2", backend="fused")
    with pytest.raises(achilles.AchillesError, match="CUDA"):
        model(torch.randint(0, 256, (2, 8)))
