"""deltanet and deltanet-noconv: the layer against a step-by-step delta-rule recurrence written
here from the paper's equations (outputs and gradients, fp32), the chunked and matrix forms, the
token-mixing matrix, what the short convolution adds, flash-linear-attention's kernel (gpu), and a
run that trains, resumes and is probed."""

import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

import achilles
from achilles.plugins.archs import deltanet
from resume_check import assert_resumes_exactly

NAMES = ["deltanet", "deltanet-noconv"]


def tiny(name, **kw):
    torch.manual_seed(kw.pop("seed", 0))
    return achilles.create_model(name, **{"vocab_size": 37, "d_model": 8, "max_len": 16, **kw}).double()


# -- an independent reference: the recurrence of the paper, token by token ------------------------
def rms(x, w, eps=1e-5):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def reference_mixer(layer, x):
    """fla's DeltaNet layer from the layer's public parameters, with the delta rule as a loop:
    S_t = S_{t-1} (I - beta_t k_t k_t^T) + beta_t v_t k_t^T,  o_t = S_t q_t / sqrt(d)."""
    n, length, dm = x.shape
    heads = layer.n_heads
    d = dm // heads
    qkv = x @ layer.qkv_proj.weight.t()
    if layer.qkv_conv:
        width = layer.conv_weight.shape[1]
        qkv = F.conv1d(qkv.transpose(1, 2), layer.conv_weight.unsqueeze(1), layer.conv_bias, padding=width - 1,
                       groups=3 * dm)[..., :length].transpose(1, 2)
    qkv = F.silu(qkv)
    q, k, v = (t.reshape(n, length, heads, d) for t in qkv.split(dm, -1))
    q = q / torch.sqrt((q * q).sum(-1, keepdim=True) + 1e-6)
    k = k / torch.sqrt((k * k).sum(-1, keepdim=True) + 1e-6)
    beta = torch.sigmoid(x @ layer.b_proj.weight.t())                    # (N, S, H)
    eye = torch.eye(d, dtype=x.dtype)
    state = torch.zeros(n, heads, d, d, dtype=x.dtype)                  # (dv, dk) per head
    outs = []
    for t in range(length):
        kt, vt, bt = k[:, t], v[:, t], beta[:, t, :, None, None]
        state = state @ (eye - bt * kt[..., :, None] * kt[..., None, :]) + bt * vt[..., :, None] * kt[..., None, :]
        outs.append((state @ q[:, t, :, :, None]).squeeze(-1) / d ** 0.5)
    o = torch.stack(outs, 1)                                             # (N, S, H, d)
    return rms(o, layer.o_norm.weight).reshape(n, length, dm) @ layer.o_proj.weight.t()


def reference_logits(model, tokens):
    h = model.embed.weight[tokens]
    for layer in model.layers:
        attn = reference_mixer(layer, rms(h, layer.norm1.weight))
        h = h + attn + F.silu(rms(h + attn, layer.norm2.weight) @ layer.ff_in.weight.t()) @ layer.ff_out.weight.t()
    return rms(h, model.final_norm.weight) @ model.unembed.weight.t()


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("heads,length,chunk,form", [(1, 9, 64, "chunked"), (2, 29, 64, "chunked"),
                                                     (2, 29, 8, "chunked"), (1, 100, 64, "chunked"),
                                                     (2, 29, 64, "matrix")])
def test_mixer_matches_the_recurrence_forward_and_gradients_fp32(name, heads, length, chunk, form):
    torch.manual_seed(0)
    model = achilles.create_model(name, d_model=32, n_heads=heads, n_layers=1, chunk_size=chunk,
                                  conv_bias=name == "deltanet")
    layer = model.layers[0]
    with torch.no_grad():
        layer.o_norm.weight.add_(0.2 * torch.randn_like(layer.o_norm.weight))
    x = torch.randn(3, length, 32, generator=torch.Generator().manual_seed(1))
    x_ours, x_ref = x.clone().requires_grad_(), x.clone().requires_grad_()
    with model.hooks(read=["layers.0.ssm.matrix"] if form == "matrix" else []):
        out = layer.mix(x_ours)
    assert layer.path == form
    params = dict(layer.named_parameters())
    out_ref = reference_mixer(layer, x_ref)
    forward_err = (out - out_ref).abs().max().item()
    assert forward_err <= 1e-5, forward_err
    weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(2))
    ours = torch.autograd.grad((out * weights).sum(), [x_ours, *params.values()], allow_unused=True)
    theirs = torch.autograd.grad((out_ref * weights).sum(), [x_ref, *params.values()], allow_unused=True)
    for key, a, b in zip(["x", *params], ours, theirs):
        if b is None:  # the FFN's parameters: not in the mixer
            assert a is None, key
            continue
        # relative to the gradient's scale: weight gradients reach ~100 here, where fp32 rounding of
        # either side (the recurrence's own error against float64 is the same size) exceeds 1e-5
        err = (a - b).abs().max().item() / max(1.0, b.abs().max().item())
        assert err <= 1e-5, (key, err)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("form", ["chunked", "matrix"])
def test_mixer_gradients_match_the_recurrence_in_float64(name, form):
    model = tiny(name, d_model=16, n_heads=2, n_layers=1, chunk_size=8)
    layer = model.layers[0]
    x = torch.randn(2, 21, 16, dtype=torch.float64, requires_grad=True)
    with model.hooks(read=["layers.0.ssm.matrix"] if form == "matrix" else []):
        out = layer.mix(x)
    assert layer.path == form
    params = [p for n, p in layer.named_parameters() if not n.startswith(("ff_", "norm"))]
    weights = torch.randn(out.shape, dtype=torch.float64)
    ours = torch.autograd.grad((out * weights).sum(), [x, *params])
    theirs = torch.autograd.grad((reference_mixer(layer, x) * weights).sum(), [x, *params])
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("name", NAMES)
def test_model_matches_the_reference_in_every_form(name):
    model = tiny(name, n_heads=2)
    tokens = torch.randint(0, 37, (3, 11))
    expect = reference_logits(model, tokens)
    torch.testing.assert_close(model(tokens), expect, rtol=1e-10, atol=1e-10)
    with model.hooks(read=["layers.*.ssm.matrix"]):
        torch.testing.assert_close(model(tokens), expect, rtol=1e-10, atol=1e-10)
    chunked = achilles.create_model(name, **{**model.config, "chunk_size": 3}).double()
    chunked.load_state_dict(model.state_dict())
    torch.testing.assert_close(chunked(tokens), expect, rtol=1e-10, atol=1e-10)


def test_matrix_is_the_linear_map_from_values_to_outputs():
    """o = M v exactly: adding delta to M[:, h, i, j] moves o_i of head h by delta * v_j (only)."""
    torch.manual_seed(0)
    n, heads, length, d = 2, 2, 9, 4
    q, k = (deltanet.l2_normalize(torch.randn(n, heads, length, d, dtype=torch.float64)) for _ in range(2))
    v = torch.randn(n, heads, length, d, dtype=torch.float64)
    beta = torch.rand(n, heads, length, dtype=torch.float64)
    M = deltanet.delta_rule_matrix(q, k, beta)
    assert M.shape == (n, heads, length, length) and torch.all(M.triu(1) == 0)
    torch.testing.assert_close(M @ v, deltanet.delta_rule_chunked(q, k, v, beta, 4), rtol=1e-10, atol=1e-12)
    model = tiny("deltanet", n_heads=2)
    tokens = torch.randint(0, 37, (2, 9))
    with model.hooks(read=["layers.0.attn.out"], edit={"layers.0.ssm.matrix": lambda M, _: M}) as base:
        model(tokens)
    i, j, h, delta = 6, 2, 1, 0.37

    def bump(M, _site):
        M = M.clone()
        M[:, h, i, j] += delta
        return M

    with model.hooks(read=["layers.0.attn.out"], edit={"layers.0.ssm.matrix": bump}) as edited:
        model(tokens)
    moved = (edited["layers.0.attn.out"] - base["layers.0.attn.out"]).abs().amax(-1)
    assert torch.all(moved[:, :i] == 0) and torch.all(moved[:, i + 1:] == 0) and torch.all(moved[:, i] > 0)


def test_the_short_convolution_is_the_only_difference():
    conv, noconv = tiny("deltanet"), tiny("deltanet-noconv")
    assert conv.config["qkv_conv"] is True and noconv.config["qkv_conv"] is False
    extra = set(conv.state_dict()) - set(noconv.state_dict())
    assert extra == {"layers.0.conv_weight", "layers.1.conv_weight"}  # fla: no conv bias by default
    assert set(noconv.state_dict()) < set(conv.state_dict())
    assert [k.shape for k in conv.conv_kernels()] == [(24, 4), (24, 4)] and noconv.conv_kernels() == []
    assert conv.hook_points("layers.0.*")[0] == "layers.0.conv.out" and not noconv.hook_points("*conv*")
    # without the conv, token t's q, k, v are functions of token t alone
    tokens = torch.randint(0, 37, (1, 8))
    edited = tokens.clone()
    edited[0, 3] = (edited[0, 3] + 1) % 37
    for model, local in ((noconv, True), (conv, False)):
        caches = []
        for t in (tokens, edited):
            with model.hooks(read=["layers.0.attn.q"]) as cache:
                model(t)
            caches.append(cache["layers.0.attn.q"][0, 4])
        assert torch.equal(*caches) == local


def test_probes_that_need_a_convolution_refuse_noconv_in_one_line():
    task = achilles.get_task("composite")
    model = achilles.create_model("deltanet-noconv", vocab_size=task.vocab_size, max_len=task.seq_len)
    for probe in ("substitution", "conv-similarity"):
        with pytest.raises(achilles.AchillesError) as err:
            achilles.get_probe(probe).check(model, task)
        assert "\n" not in str(err.value) and "'deltanet-noconv'" in str(err.value), str(err.value)
    for probe in ("blocking", "information-flow"):
        achilles.get_probe(probe).check(model, task)


@pytest.mark.parametrize("kwargs,setting", [(dict(n_heads=3), "n_heads"), (dict(chunk_size=0), "chunk_size"),
                                            (dict(backend="magic"), "backend"), (dict(qkv_conv=1), "qkv_conv"),
                                            (dict(d_ff=0), "d_ff"), (dict(rope_base=5), "rope_base")])
def test_bad_settings_are_config_errors(kwargs, setting):
    with pytest.raises(achilles.ConfigError, match=setting):
        achilles.create_model("deltanet", **kwargs)


def test_cpu_never_imports_fla():
    if torch.cuda.is_available():
        pytest.skip("a CUDA machine may import the kernels")
    code = ("import sys, torch, achilles\n"
            "m = achilles.create_model('deltanet', backend='auto')\n"
            "m(torch.randint(0, 256, (2, 5))).sum().backward()\n"
            "print('fla' in sys.modules, m.layers[0].path)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "chunked"]
    with pytest.raises(achilles.ConfigError, match="CUDA"):
        achilles.create_model("deltanet", backend="fused")


@pytest.mark.parametrize("name", NAMES)
def test_vmapped_ensemble_forward_matches_members(name):
    import copy

    from torch.func import functional_call, stack_module_state, vmap
    models = [tiny(name, seed=s, n_heads=2).float() for s in range(3)]
    params, buffers = stack_module_state(models)
    base = copy.deepcopy(models[0])
    tokens = torch.randint(0, 37, (3, 4, 7))
    out = vmap(lambda p, b, t: functional_call(base, (p, b), (t,)))(params, buffers, tokens)
    for m in range(3):
        torch.testing.assert_close(out[m], models[m](tokens[m]), rtol=1e-4, atol=1e-5)
    out.square().mean().backward()


# -- flash-linear-attention's kernel ------------------------------------------------------------------
@pytest.mark.gpu
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("shape", [(64, 8, 32), (32, 29, 128), (4, 300, 64)])
def test_fla_matches_torch_forward_and_gradients(name, shape):
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    if deltanet.fla_kernel() is None:
        pytest.skip(f"flash-linear-attention unavailable: {deltanet._cache['reason']}")
    batch, length, d = shape
    torch.manual_seed(0)
    ref = achilles.create_model(name, d_model=d, max_len=512, backend="torch").cuda()
    fast = achilles.create_model(name, d_model=d, max_len=512, backend="fused").cuda()
    fast.load_state_dict(ref.state_dict())
    tokens = torch.randint(0, 256, (batch, length), device="cuda")
    weights = torch.randn(batch, length, 256, device="cuda")
    outs = []
    for model in (ref, fast):
        logits = model(tokens)
        (logits * weights).sum().backward()
        outs.append((logits.detach(), {k: p.grad.detach().clone() for k, p in model.named_parameters()}))
    assert [layer.path for layer in fast.layers] == ["fused", "fused"]
    (ref_out, ref_grads), (fast_out, fast_grads) = outs
    assert (fast_out - ref_out).abs().max() <= 2e-3 * ref_out.abs().max() + 1e-4
    for key, g in ref_grads.items():
        err = (fast_grads[key] - g).abs().max()
        assert err <= 5e-3 * g.abs().max() + 1e-5, (key, err.item(), g.abs().max().item())


# -- train, resume, probe ----------------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_train_resume_and_probes(name, tmp_path, monkeypatch, request):
    from achilles import ProbeContext
    from achilles.models.loading import load_run

    common = dict(profile="quick", model_config={"n_layers": 2, "d_model": 16}, seed=2, epochs=2,
                  train_samples=64, eval_samples=8, batch_size=16, progress=False)
    # one thread for both halves: earlier tests may leave a thread count that resume_run then changes,
    # and the batched triangular solve's sums follow the thread count
    monkeypatch.setenv("ACHILLES_THREADS", "1")
    threads, set_threads = torch.get_num_threads(), torch.set_num_threads
    request.addfinalizer(lambda: set_threads(threads))
    set_threads(1)
    monkeypatch.setattr(torch, "set_num_threads", lambda n: None)  # nothing re-threads mid-test
    assert_resumes_exactly(name, "composite", tmp_path, **common)

    run = load_run(tmp_path / "cut")
    task, model = run.task, run.model.eval()
    context = ProbeContext(tmp_path / "probes", run_dir=tmp_path / "cut")
    probes = [("blocking", dict(samples=8, pair="34")), ("information-flow", dict(samples=1, summary_samples=8))]
    if name == "deltanet":
        probes += [("substitution", dict(samples=8, pair="34")), ("conv-similarity", {})]
    for probe_name, options in probes:
        probe = achilles.get_probe(probe_name)
        probe.check(model, task)
        assert isinstance(probe.run(model, task, context, **options), dict), probe_name


@pytest.mark.parametrize("name", NAMES)
def test_fla_glue_with_a_stand_in_kernel_on_cpu(name, monkeypatch):
    """The kernel call's layouts and arguments, on a CPU: a stand-in with the semantics of fla's
    ``chunk_delta_rule`` (q, k, v (B, T, H, D), beta (B, T, H), q scaled by ``scale``, state
    S += k (beta (v - S^T k))^T, o = S^T q) in place of the kernel."""
    def chunk_delta_rule(q, k, v, beta, scale=None, initial_state=None, output_final_state=False):
        assert q.dim() == k.dim() == v.dim() == 4 and beta.shape == q.shape[:3] and initial_state is None
        b, t, h, d = q.shape
        state, outs = torch.zeros(b, h, d, v.shape[-1], dtype=q.dtype), []
        for i in range(t):
            kt = k[:, i]
            u = beta[:, i, :, None] * (v[:, i] - torch.einsum("bhkv,bhk->bhv", state, kt))
            state = state + kt[..., :, None] * u[..., None, :]
            outs.append(torch.einsum("bhkv,bhk->bhv", state, q[:, i] * scale))
        return torch.stack(outs, 1), None

    model = tiny(name, n_heads=2)
    tokens = torch.randint(0, 37, (3, 9))
    expect = model(tokens)
    monkeypatch.setattr(deltanet, "fla_kernel", lambda: chunk_delta_rule)
    monkeypatch.setattr(deltanet, "kernels_allowed", lambda backend, x: (True, "stand-in"))
    got = model(tokens)
    assert [layer.path for layer in model.layers] == ["fused", "fused"]
    torch.testing.assert_close(got, expect, rtol=1e-10, atol=1e-10)
