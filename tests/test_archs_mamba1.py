"""mamba1 (the S6 block of mamba_ssm's Mamba): parity with Hugging Face transformers' MambaBlock
(its PyTorch path, same weights, outputs and gradients), the scan's hand-written backward, the
per-channel SSM matrix, init and weight decay marks, the fused kernel (gpu), and a run that
trains, resumes and is probed."""

import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

import achilles
from achilles.plugins.archs import mamba1
from resume_check import assert_resumes_exactly

TINY = dict(vocab_size=37, d_model=8, max_len=16)


def tiny(**kw):
    torch.manual_seed(kw.pop("seed", 0))
    return achilles.create_model("mamba1", **{**TINY, **kw}).double()


# -- parity with transformers' MambaBlock ----------------------------------------------------------
def _hf_block(ours, d_model):
    transformers = pytest.importorskip("transformers")  # the optional `bench` extra
    from transformers.models.mamba import modeling_mamba

    transformers.logging.set_verbosity_error()
    config = transformers.MambaConfig(
        hidden_size=d_model, state_size=ours.d_state, intermediate_size=ours.d_inner, conv_kernel=4,
        time_step_rank=ours.dt_rank, use_conv_bias=True, use_bias=False, layer_norm_epsilon=1e-5,
        hidden_act="silu", num_hidden_layers=1, residual_in_fp32=True, vocab_size=37)
    block = modeling_mamba.MambaBlock(config, layer_idx=0).eval()
    mixer = block.mixer
    with torch.no_grad():
        block.norm.weight.copy_(ours.norm.weight)
        mixer.in_proj.weight.copy_(ours.in_proj.weight)
        mixer.conv1d.weight.copy_(ours.conv_weight.unsqueeze(1))
        mixer.conv1d.bias.copy_(ours.conv_bias)
        mixer.x_proj.weight.copy_(ours.x_proj.weight)
        mixer.dt_proj.weight.copy_(ours.dt_proj.weight)
        mixer.dt_proj.bias.copy_(ours.dt_proj.bias)
        mixer.A_log.copy_(ours.A_log)
        mixer.D.copy_(ours.D)
        mixer.out_proj.weight.copy_(ours.out_proj.weight)
    return block


#: our parameter -> (HF parameter, how to bring HF's gradient to our shape)
PARAMS = {"norm.weight": "norm.weight", "in_proj.weight": "mixer.in_proj.weight",
          "conv_weight": "mixer.conv1d.weight", "conv_bias": "mixer.conv1d.bias",
          "x_proj.weight": "mixer.x_proj.weight", "dt_proj.weight": "mixer.dt_proj.weight",
          "dt_proj.bias": "mixer.dt_proj.bias", "A_log": "mixer.A_log", "D": "mixer.D",
          "out_proj.weight": "mixer.out_proj.weight"}


@pytest.mark.parametrize("path", ["scan", "modular", "matrix"])
@pytest.mark.parametrize("d_model,length", [(16, 9), (32, 29)])
def test_block_matches_transformers_mamba_block_forward_and_gradients(path, d_model, length):
    torch.manual_seed(0)
    model = achilles.create_model("mamba1", d_model=d_model, n_layers=1, gamma=0.5)
    ours = model.layers[0]
    # trained-looking values: A, D and the dt bias away from their init
    with torch.no_grad():
        ours.A_log.add_(0.3 * torch.randn_like(ours.A_log))
        ours.D.add_(0.5 * torch.randn_like(ours.D))
        ours.dt_proj.bias.add_(0.5 * torch.randn_like(ours.dt_proj.bias))
        ours.norm.weight.add_(0.1 * torch.randn_like(ours.norm.weight))
    theirs = _hf_block(ours, d_model)
    ours.force_path = "modular" if path == "modular" else None
    x = torch.randn(3, length, d_model, generator=torch.Generator().manual_seed(1))
    x_ours, x_theirs = x.clone().requires_grad_(), x.clone().requires_grad_()
    if path == "matrix":
        with model.hooks(read=["layers.0.ssm.matrix"]):
            out_ours = ours(x_ours)
    else:
        out_ours = ours(x_ours)
    assert ours.path == ("modular" if path != "scan" else "scan")
    out_theirs = theirs(x_theirs)
    forward_err = (out_ours - out_theirs).abs().max().item()
    assert forward_err <= 1e-5, forward_err
    weights = torch.randn(out_ours.shape, generator=torch.Generator().manual_seed(2))
    (out_ours * weights).sum().backward()
    (out_theirs * weights).sum().backward()
    errors = {"x": (x_ours.grad - x_theirs.grad).abs().max().item()}
    hf = dict(theirs.named_parameters())
    for name, p in ours.named_parameters():
        errors[name] = (p.grad - hf[PARAMS[name]].grad.reshape(p.shape)).abs().max().item()
    assert set(errors) == {"x", *PARAMS}
    assert max(errors.values()) <= 1e-5, errors


# -- the scan, its backward and the SSM matrix ------------------------------------------------------
def _scan_inputs(n=3, length=7, d=5, k=4):
    g = torch.Generator().manual_seed(0)
    return [torch.randn(n, length, d, generator=g, dtype=torch.float64),
            torch.rand(n, length, d, generator=g, dtype=torch.float64) + 0.1,
            -torch.rand(d, k, generator=g, dtype=torch.float64) - 0.5,
            torch.randn(n, length, k, generator=g, dtype=torch.float64),
            torch.randn(n, length, k, generator=g, dtype=torch.float64),
            torch.randn(d, generator=g, dtype=torch.float64)]


@pytest.mark.parametrize("tile", [None, 2 * 7 * 5 * 4])  # one tile; tiles of two samples (and one of one)
def test_scan_backward_passes_gradcheck_and_matches_the_recurrence(tile, monkeypatch):
    if tile is not None:
        monkeypatch.setattr(mamba1, "TILE_STATES", tile)
    args = [a.requires_grad_() for a in _scan_inputs()]
    assert torch.autograd.gradcheck(mamba1._SelectiveScan.apply, args)
    x, dt, A, B, C, D = args
    state = torch.zeros(3, 5, 4, dtype=torch.float64)
    ys = []
    for t in range(7):  # h_t = exp(dt_t A) h_{t-1} + dt_t x_t B_t ;  y_t = h_t C_t + D x_t
        state = torch.exp(dt[:, t, :, None] * A) * state + (dt[:, t] * x[:, t])[..., None] * B[:, t, None, :]
        ys.append((state * C[:, t, None, :]).sum(-1) + D * x[:, t])
    expect = torch.stack(ys, 1)
    for fn in (mamba1.selective_scan, mamba1.selective_scan_reference):
        torch.testing.assert_close(fn(*args), expect, rtol=1e-12, atol=1e-12)
    S = mamba1.s6_matrix(dt, A, B, C)
    assert S.shape == (3, 5, 7, 7) and torch.all(S.triu(1) == 0)
    torch.testing.assert_close(mamba1.apply_s6_matrix(S, x, dt, D), expect, rtol=1e-10, atol=1e-12)


def _float32_scan_inputs(n, length, d, k):
    return [a.float().requires_grad_() for a in _scan_inputs(n, length, d, k)]


def test_compiled_scan_matches_the_recurrence_in_values_and_gradients(monkeypatch):
    """The compiled chunked scan (the CPU default for large inputs) against the plain recurrence:
    a length that is not a whole number of chunks (padded), several batch tiles and a short last
    one, in float32 as it runs in training."""
    from achilles.plugins.archs import s6_compiled

    if s6_compiled.compiled_chunks() is None:
        pytest.fail(f"torch.compile should work on the CI machines: {s6_compiled.unavailable_reason()}")
    monkeypatch.setattr(s6_compiled, "TILE_STATES", 2 * s6_compiled.CHUNK * 5 * 4)  # tiles of 2 samples
    args = _float32_scan_inputs(n=5, length=2 * s6_compiled.CHUNK + 3, d=5, k=4)
    ref = [a.detach().clone().requires_grad_() for a in args]
    gy = torch.randn(args[0].shape, generator=torch.Generator().manual_seed(1))
    got = s6_compiled.ChunkedScan.apply(*args)
    expect = mamba1.selective_scan_reference(*ref)
    torch.testing.assert_close(got, expect, rtol=1e-5, atol=1e-5)
    got.backward(gy)
    expect.backward(gy)
    for name, a, b in zip("x dt A B C D".split(), args, ref):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-4, msg=name)


def test_large_float32_inputs_take_the_compiled_scan_small_ones_the_eager_one(monkeypatch):
    from achilles.plugins.archs import s6_compiled

    model = tiny().float()
    tokens = torch.randint(0, 37, (4, 11))
    eager = model(tokens)
    assert [layer.path for layer in model.layers] == ["scan", "scan"]  # tiny: compiling would not pay
    monkeypatch.setattr(s6_compiled, "MIN_STATES", 1)
    compiled = model(tokens)
    assert [layer.path for layer in model.layers] == ["compiled", "compiled"]
    torch.testing.assert_close(compiled, eager, rtol=1e-5, atol=1e-5)
    assert model.double()(tokens.clone()).dtype == torch.float64  # float64 keeps the eager scan
    assert [layer.path for layer in model.layers] == ["scan", "scan"]
    monkeypatch.setenv("ACHILLES_COMPILE_SCAN", "0")  # the switch for a user who wants the eager scan
    model.float()(tokens)
    assert [layer.path for layer in model.layers] == ["scan", "scan"]


def test_a_machine_where_compiling_fails_gets_the_eager_scan_and_one_warning(monkeypatch, caplog):
    from achilles.plugins.archs import s6_compiled

    def broken_compile(fn, **kwargs):
        def call(*args):
            raise RuntimeError("no C++ compiler found")
        return call

    monkeypatch.setattr(s6_compiled, "_cache", {})  # as in a fresh process
    monkeypatch.setattr(torch, "compile", broken_compile)
    monkeypatch.setattr(s6_compiled, "MIN_STATES", 1)
    model = tiny().float()
    tokens = torch.randint(0, 37, (4, 11))
    with caplog.at_level("WARNING", logger="achilles"):
        got = model(tokens)
        model(tokens)
    assert [layer.path for layer in model.layers] == ["scan", "scan"]
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "no C++ compiler found" in warnings[0], warnings
    for layer in model.layers:
        layer.force_path = "scan"
    torch.testing.assert_close(got, model(tokens), rtol=0, atol=0)


def test_paths_agree_values_and_gradients():
    model = tiny()
    tokens = torch.randint(0, 37, (4, 11))
    results = []
    for force, read in ((None, []), ("modular", []), (None, ["layers.*.ssm.matrix"])):
        for layer in model.layers:
            layer.force_path = force
        model.zero_grad()
        with model.hooks(read=read):
            logits = model(tokens)
        (logits.sin() * torch.arange(37, dtype=torch.float64)).sum().backward()
        results.append((logits.detach(), {k: p.grad.clone() for k, p in model.named_parameters()}))
    assert [layer.path for layer in model.layers] == ["modular", "modular"]
    for out, grads in results[1:]:
        torch.testing.assert_close(out, results[0][0], rtol=1e-10, atol=1e-12)
        for key in grads:
            torch.testing.assert_close(grads[key], results[0][1][key], rtol=1e-8, atol=1e-11, msg=key)


def test_hooked_matrix_is_exact_and_linear():
    """Adding delta to S[:, d, i, j] of layer 0 moves y_i of channel d by delta * dt_j x_j (only)."""
    model = tiny()
    tokens = torch.randint(0, 37, (2, 9))
    with model.hooks(read=["layers.0.ssm.*"]) as base:
        model(tokens)
    i, j, d, delta = 6, 2, 3, 0.37

    def bump(S, _site):
        S = S.clone()
        S[:, d, i, j] += delta
        return S

    with model.hooks(read=["layers.0.ssm.y"], edit={"layers.0.ssm.matrix": bump}) as edited:
        model(tokens)
    change = edited["layers.0.ssm.y"] - base["layers.0.ssm.y"]
    expect = delta * base["layers.0.ssm.dt"][:, j, d] * base["layers.0.ssm.x"][:, j, d]
    torch.testing.assert_close(change[:, i, d], expect, rtol=1e-10, atol=1e-12)
    change[:, i, d] = 0
    assert change.abs().max() == 0


# -- init, settings --------------------------------------------------------------------------------
def test_init_follows_mamba_ssm_and_marks_no_weight_decay():
    torch.manual_seed(0)
    model = achilles.create_model("mamba1", d_model=64, gamma=0.5)
    layer = model.layers[0]
    assert layer.d_inner == 128 and layer.d_state == 16 and layer.dt_rank == 4
    assert layer.A_log.shape == (128, 16)
    torch.testing.assert_close(-torch.exp(layer.A_log), -torch.arange(1, 17.0).repeat(128, 1))
    assert torch.equal(layer.D, torch.ones(128))
    dt = F.softplus(layer.dt_proj.bias)
    assert torch.all((dt >= 1e-3 * 0.999) & (dt <= 0.1 * 1.001))
    assert layer.in_proj.weight.std().item() == pytest.approx(64 ** -0.5, rel=0.08)
    from achilles.training.trainer import no_weight_decay_names
    assert no_weight_decay_names(model) == {f"layers.{i}.{p}" for i in range(2)
                                            for p in ("A_log", "D", "dt_proj.bias")}
    cfg = achilles.create_model("mamba1").config
    assert (cfg["d_model"], cfg["n_layers"], cfg["d_state"], cfg["expand"], cfg["dt_rank"]) == (32, 2, 16, 2, "auto")


@pytest.mark.parametrize("kwargs,setting", [(dict(d_state=0), "d_state"), (dict(dt_rank=0), "dt_rank"),
                                            (dict(backend="magic"), "backend"), (dict(dt_min=1.0), "dt_min"),
                                            (dict(conv_bias=1), "conv_bias"), (dict(heads=2), "heads")])
def test_bad_settings_are_config_errors(kwargs, setting):
    with pytest.raises(achilles.ConfigError, match=setting):
        achilles.create_model("mamba1", **kwargs)


def test_cpu_never_imports_mamba_ssm():
    code = ("import sys, torch, achilles\n"
            "m = achilles.create_model('mamba1', backend='auto')\n"
            "m(torch.randint(0, 256, (2, 5))).sum().backward()\n"
            "print('mamba_ssm' in sys.modules, m.layers[0].path)\n")
    if torch.cuda.is_available():
        pytest.skip("a CUDA machine may import the kernels")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "scan"]
    with pytest.raises(achilles.ConfigError, match="CUDA"):
        achilles.create_model("mamba1", backend="fused")


def test_vmapped_ensemble_forward_matches_members():
    import copy

    from torch.func import functional_call, stack_module_state, vmap
    models = [tiny(seed=s).float() for s in range(3)]
    params, buffers = stack_module_state(models)
    base = copy.deepcopy(models[0])
    tokens = torch.randint(0, 37, (3, 4, 7))
    out = vmap(lambda p, b, t: functional_call(base, (p, b), (t,)))(params, buffers, tokens)
    for m in range(3):
        torch.testing.assert_close(out[m], models[m](tokens[m]), rtol=1e-4, atol=1e-5)
    out.square().mean().backward()


# -- the fused kernel --------------------------------------------------------------------------------
@pytest.mark.gpu
@pytest.mark.parametrize("shape", [(64, 8, 32), (32, 29, 128), (4, 300, 64)])
def test_fused_matches_torch_forward_and_gradients(shape):
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    if mamba1.scan_kernel() is None:
        pytest.skip(f"selective_scan_fn unavailable: {mamba1._cache['reason']}")
    batch, length, d = shape
    torch.manual_seed(0)
    ref = achilles.create_model("mamba1", d_model=d, max_len=512, backend="torch").cuda()
    fast = achilles.create_model("mamba1", d_model=d, max_len=512, backend="fused").cuda()
    fast.load_state_dict(ref.state_dict())
    tokens = torch.randint(0, 256, (batch, length), device="cuda")
    weights = torch.randn(batch, length, 256, device="cuda")
    outs = []
    for model in (ref, fast):
        logits = model(tokens)
        (logits * weights).sum().backward()
        outs.append((logits.detach(), {k: p.grad.detach().clone() for k, p in model.named_parameters()}))
    assert [layer.path for layer in ref.layers] == ["scan", "scan"]
    assert [layer.path for layer in fast.layers] == ["fused", "fused"]
    (ref_out, ref_grads), (fast_out, fast_grads) = outs
    assert (fast_out - ref_out).abs().max() <= 2e-3 * ref_out.abs().max() + 1e-4
    for key, g in ref_grads.items():
        err = (fast_grads[key] - g).abs().max()
        assert err <= 5e-3 * g.abs().max() + 1e-5, (key, err.item(), g.abs().max().item())


# -- train, resume, probe ----------------------------------------------------------------------------
def test_train_resume_and_every_probe(tmp_path):
    from achilles import ProbeContext
    from achilles.models.loading import load_run

    common = dict(profile="quick", model_config={"n_layers": 2, "d_model": 16}, seed=2, epochs=2,
                  train_samples=64, eval_samples=8, batch_size=16, progress=False)
    assert_resumes_exactly("mamba1", "composite", tmp_path, site="embed", **common)

    run = load_run(tmp_path / "cut")
    task, model = run.task, run.model.eval()
    context = ProbeContext(tmp_path / "probes", run_dir=tmp_path / "cut")
    for name, options in [("blocking", dict(samples=8, pair="34")), ("substitution", dict(samples=8, pair="34")),
                          ("information-flow", dict(samples=1, summary_samples=8)), ("conv-similarity", {})]:
        probe = achilles.get_probe(name)
        probe.check(model, task)
        assert isinstance(probe.run(model, task, context, **options), dict), name


def test_fused_glue_with_a_stand_in_kernel_on_cpu(monkeypatch):
    """The kernel call's layouts and arguments, on a CPU: a stand-in with the semantics of mamba_ssm's
    ``selective_scan_ref`` (u, delta (b, d, l), A (d, n), B, C (b, n, l), D, z, delta_bias, softplus)
    in place of ``selective_scan_fn``."""
    def selective_scan_ref(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
        for t in (u, delta, B, C, z):
            assert t.dim() == 3 and t.shape[0] == u.shape[0] and t.shape[-1] == u.shape[-1]
        assert A.dtype == D.dtype == delta_bias.dtype == torch.float32
        delta = delta + delta_bias[..., None]
        if delta_softplus:
            delta = F.softplus(delta)
        dA = torch.exp(torch.einsum("bdl,dn->bdln", delta, A))
        dBu = torch.einsum("bdl,bnl,bdl->bdln", delta, B, u)
        state, ys = torch.zeros_like(dA[:, :, 0]), []
        for i in range(u.shape[-1]):
            state = dA[:, :, i] * state + dBu[:, :, i]
            ys.append(torch.einsum("bdn,bn->bd", state, C[:, :, i]))
        return (torch.stack(ys, 2) + u * D[..., None]) * F.silu(z)

    model = tiny().float()
    tokens = torch.randint(0, 37, (3, 9))
    expect = model(tokens)
    monkeypatch.setattr(mamba1, "scan_kernel", lambda: selective_scan_ref)
    monkeypatch.setattr(mamba1, "kernels_allowed", lambda backend, x: (True, "stand-in"))
    got = model(tokens)
    assert [layer.path for layer in model.layers] == ["fused", "fused"]
    torch.testing.assert_close(got, expect, rtol=1e-5, atol=1e-5)
