"""Mamba2 and its variants against an independent implementation written here (conv1d + a
sequential recurrence), the fast path against the modular one, and the variants' definitions."""

import math

import pytest
import torch
import torch.nn.functional as F

import achilles
from achilles.plugins.archs import mamba2_fast


MAMBAS = ["mamba2", "mamba2-allone", "mamba2-posenc", "mamba2-residual", "mamba2-gated", "mamba2-global"]
TINY = dict(vocab_size=37, d_model=8, d_state=6, max_len=16)


def tiny(name, **kw):
    torch.manual_seed(kw.pop("seed", 0))
    return achilles.create_model(name, **{**TINY, **kw}).double()


def rms(x, w, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def reference_layer(layer, h, cfg):
    """One Mamba2 layer of appendix B, from the layer's public parameters, step by step."""
    eps, din, nst, heads = cfg["norm_eps"], cfg["expand"] * cfg["d_model"], cfg["d_state"], cfg["n_heads"]
    n, length, _ = h.shape
    p = din // heads
    u = rms(h, layer.norm.weight, eps)
    proj = u @ layer.in_proj.weight.t()
    z, xBC = proj[..., :din], proj[..., din:2 * din + 2 * nst]
    width = cfg["conv_width"]
    conv = F.conv1d(xBC.transpose(1, 2), layer.conv_weight.unsqueeze(1), layer.conv_bias,
                    padding=width - 1, groups=xBC.shape[-1])[..., :length].transpose(1, 2)
    conv = F.silu(conv)
    ssm_in = {"conv": conv, "residual": conv + xBC, "gated": conv * xBC}[cfg["ssm_input"]]
    x, B, C = ssm_in[..., :din], ssm_in[..., din:din + nst], ssm_in[..., din + nst:]
    if cfg["dt_source"] == "global":
        local = F.silu(conv[..., :din] @ layer.dt_in.weight.t()) @ layer.dt_out.weight.t()
        k = layer.long_conv_weight.shape[-1]
        long = F.conv1d(xBC[..., :din].transpose(1, 2), layer.long_conv_weight, padding=k - 1,
                        groups=heads)[..., :length].transpose(1, 2)
        dt_raw = local * torch.sigmoid(long)
    else:
        dt_raw = proj[..., 2 * din + 2 * nst:]
    dt = F.softplus(dt_raw + layer.dt_bias)
    A = -torch.exp(layer.A_log)
    xh = x.reshape(n, length, heads, p)
    state = torch.zeros(n, heads, p, nst, dtype=h.dtype)
    ys = []
    for t in range(length):  # h_t = exp(dt A) h_{t-1} + dt B_t x_t ;  y_t = C_t h_t + D x_t
        state = torch.exp(dt[:, t] * A)[..., None, None] * state \
            + dt[:, t, :, None, None] * xh[:, t, :, :, None] * B[:, t, None, None, :]
        ys.append((state * C[:, t, None, None, :]).sum(-1) + layer.D[:, None] * xh[:, t])
    y = torch.stack(ys, 1).reshape(n, length, din)
    out = rms(y * F.silu(z), layer.gate_norm.weight, eps) @ layer.out_proj.weight.t()
    return h + out


def reference_logits(model, tokens):
    cfg = model.config
    h = model.embed.weight[tokens]
    if cfg["pos_enc"]:
        h = h + model.pos_embed.weight[: tokens.shape[1]]
    for layer in model.layers:
        h = reference_layer(layer, h, cfg)
    return rms(h, model.final_norm.weight, cfg["norm_eps"]) @ model.unembed.weight.t()


@pytest.mark.parametrize("name", MAMBAS)
@pytest.mark.parametrize("heads", [1, 2])
def test_model_matches_independent_recurrence(name, heads):
    model = tiny(name, n_heads=heads)
    tokens = torch.randint(0, 37, (3, 11))
    expect = reference_logits(model, tokens)
    torch.testing.assert_close(model(tokens), expect, rtol=1e-9, atol=1e-9)          # fast path
    with model.hooks(read=["layers.*.ssm.matrix"]):                                   # modular path
        torch.testing.assert_close(model(tokens), expect, rtol=1e-9, atol=1e-9)
    chunked = achilles.create_model(name, **{**model.config, "ssd_form": "chunked", "chunk_size": 4}).double()
    chunked.load_state_dict(model.state_dict())
    torch.testing.assert_close(chunked(tokens), expect, rtol=1e-9, atol=1e-9)       # chunked form


@pytest.mark.parametrize("name", [m for m in MAMBAS if m != "mamba2-global"])
@pytest.mark.parametrize("heads,length", [(1, 9), (2, 6)])
def test_fast_path_matches_modular_path_values_and_gradients(name, heads, length, monkeypatch):
    monkeypatch.setattr(mamba2_fast, "TILE_TOKENS", 2 * length)  # several batch tiles
    model = tiny(name, n_heads=heads)
    tokens = torch.randint(0, 37, (5, length))
    results = []
    for path in ("fast", "modular"):
        for layer in model.layers:
            layer.force_path = path if path == "modular" else None
        model.zero_grad()
        logits = model(tokens)
        assert [layer.path for layer in model.layers] == [path, path]
        (logits.sin() * torch.arange(37, dtype=torch.float64)).sum().backward()
        results.append((logits.detach(), {k: p.grad.clone() for k, p in model.named_parameters()}))
    (fast_out, fast_grads), (ref_out, ref_grads) = results
    torch.testing.assert_close(fast_out, ref_out, rtol=1e-10, atol=1e-12)
    assert fast_grads.keys() == ref_grads.keys()
    for key in ref_grads:
        torch.testing.assert_close(fast_grads[key], ref_grads[key], rtol=1e-8, atol=1e-11, msg=key)


def test_auto_switches_to_chunked_above_the_threshold():
    model = tiny("mamba2", quadratic_max_len=5, chunk_size=3)
    quad = achilles.create_model("mamba2", **{**model.config, "ssd_form": "quadratic"}).double()
    quad.load_state_dict(model.state_dict())
    tokens = torch.randint(0, 37, (2, 13))
    torch.testing.assert_close(model(tokens), quad(tokens), rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(model(tokens), reference_logits(model, tokens), rtol=1e-9, atol=1e-10)


# -- variants -----------------------------------------------------------------------------------
def _pre_and_post_conv(model, tokens):
    """(pre-conv xBC, conv.out, ssm x/B/C) of layer 0, the pre-conv value recomputed from embed."""
    with model.hooks(read=["embed", "layers.0.conv.out", "layers.0.ssm.*"]) as cache:
        model(tokens)
    layer, cfg = model.layers[0], model.config
    din, nst = 2 * cfg["d_model"], cfg["d_state"]
    xBC = (rms(cache["embed"], layer.norm.weight, cfg["norm_eps"]) @ layer.in_proj.weight.t())[..., din:2 * din + 2 * nst]
    ssm = torch.cat([cache["layers.0.ssm.x"], cache["layers.0.ssm.B"], cache["layers.0.ssm.C"]], -1)
    return xBC, cache["layers.0.conv.out"], ssm


def test_residual_variant_adds_the_conv_input_and_has_positional_encoding():
    model = tiny("mamba2-residual")
    assert model.config["ssm_input"] == "residual" and model.config["pos_enc"] is True
    xBC, conv, ssm = _pre_and_post_conv(model, torch.randint(0, 37, (2, 7)))
    torch.testing.assert_close(ssm, conv + xBC)
    assert (ssm - conv).abs().max() > 1e-3
    assert "pos_embed.weight" in model.state_dict()
    plain = tiny("mamba2")
    assert plain.config["pos_enc"] is False and "pos_embed.weight" not in plain.state_dict()


def test_gated_variant_multiplies_post_conv_by_pre_conv():
    model = tiny("mamba2-gated")
    xBC, conv, ssm = _pre_and_post_conv(model, torch.randint(0, 37, (2, 7)))
    torch.testing.assert_close(ssm, conv * xBC)


def test_plain_ssm_inputs_are_the_conv_output():
    xBC, conv, ssm = _pre_and_post_conv(tiny("mamba2"), torch.randint(0, 37, (2, 7)))
    torch.testing.assert_close(ssm, conv)


def test_posenc_changes_with_position_but_plain_embedding_does_not():
    tokens = torch.full((1, 5), 3)
    for name, varies in (("mamba2-posenc", True), ("mamba2", False)):
        model = tiny(name)
        with model.hooks(read=["embed"]) as cache:
            model(tokens)
        spread = (cache["embed"][0] - cache["embed"][0, :1]).abs().max()
        assert (spread > 0) == varies


def test_allone_kernel_is_ones_and_stays_ones_after_an_optimizer_step():
    model = tiny("mamba2-allone").float()
    kernels = model.conv_kernels()
    assert len(kernels) == 2 and all(torch.equal(k, torch.ones_like(k)) for k in kernels)
    assert kernels[0].shape == (2 * 8 + 2 * 6, 4)
    assert not any("conv_weight" in name for name, _ in model.named_parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=0.1, weight_decay=0.1)
    bias_before = model.layers[0].conv_bias.detach().clone()
    model(torch.randint(0, 37, (4, 9))).square().mean().backward()
    opt.step()
    assert all(torch.equal(k, torch.ones_like(k)) for k in model.conv_kernels())
    assert not torch.equal(model.layers[0].conv_bias, bias_before)  # the bias still learns


def test_global_selection_reads_the_long_context():
    model = tiny("mamba2-global", long_conv_width=128)
    assert model.layers[0].long_conv_weight.shape == (1, 16, 128)
    assert "dt_in.weight" in dict(model.layers[0].named_parameters())
    tokens = torch.randint(0, 37, (1, 12))
    edited = tokens.clone()
    edited[0, 0] = (edited[0, 0] + 1) % 37
    with model.hooks(read=["layers.0.ssm.dt"]) as a:
        model(tokens)
    with model.hooks(read=["layers.0.ssm.dt"]) as b:
        model(edited)
    # the short conv sees 4 tokens; dt at position 11 changes only through the long conv
    assert (a["layers.0.ssm.dt"][0, 11] - b["layers.0.ssm.dt"][0, 11]).abs().max() > 0
    plain = tiny("mamba2")
    with plain.hooks(read=["layers.0.ssm.dt"]) as a:
        plain(tokens)
    with plain.hooks(read=["layers.0.ssm.dt"]) as b:
        plain(edited)
    assert torch.equal(a["layers.0.ssm.dt"][0, 1:], b["layers.0.ssm.dt"][0, 1:])


# -- init, config, errors ---------------------------------------------------------------------------
@pytest.mark.parametrize("gamma", [0.5, 1.0])
def test_gamma_init_std(gamma):
    torch.manual_seed(0)
    model = achilles.create_model("mamba2", d_model=64, gamma=gamma, vocab_size=300)
    checks = {"layers.0.in_proj.weight": 64, "layers.0.out_proj.weight": 128, "embed.weight": 64,
              "unembed.weight": 64, "layers.0.conv_weight": 4}
    params = dict(model.named_parameters())
    for name, fan_in in checks.items():
        std = params[name].std().item()
        assert std == pytest.approx(fan_in ** -gamma, rel=0.08), name
    layer = model.layers[0]
    assert torch.equal(layer.D, torch.ones_like(layer.D))
    assert torch.equal(layer.gate_norm.weight, torch.ones_like(layer.gate_norm.weight))
    A = -torch.exp(layer.A_log)
    assert torch.all((-A >= 1) & (-A <= 16))
    dt = F.softplus(layer.dt_bias)
    assert torch.all((dt >= 1e-3 * 0.999) & (dt <= 0.1 * 1.001))


def test_same_seed_same_model_and_config_rebuilds_it():
    for name in achilles.list_architectures():
        torch.manual_seed(3)
        a = achilles.create_model(name)
        torch.manual_seed(3)
        b = achilles.create_model(name, **a.config)
        assert type(a) is type(b) and a.config == b.config
        sa, sb = a.state_dict(), b.state_dict()
        assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
        import json
        assert json.loads(json.dumps(a.config)) == a.config
        for key in ("vocab_size", "n_layers", "d_model", "gamma", "max_len", "backend"):
            assert key in a.config


def test_default_sizes_follow_the_paper():
    cfg = achilles.create_model("mamba2").config
    assert (cfg["d_model"], cfg["d_state"], cfg["expand"], cfg["n_heads"], cfg["conv_width"]) == (32, 128, 2, 1, 4)
    model = achilles.create_model("mamba2-residual", n_layers=2, d_model=128)
    assert model(torch.randint(0, 256, (2, 29))).shape == (2, 29, 256)


@pytest.mark.parametrize("kwargs,setting", [
    (dict(n_heads=3), "n_heads"),
    (dict(conv_width=0), "conv_width"),
    (dict(backend="cuda-magic"), "backend"),
    (dict(ssd_form="linear"), "ssd_form"),
    (dict(d_model=0), "d_model"),
    (dict(A_init_range=(5, 1)), "A_init_range"),
    (dict(conv_kernel="zeros"), "conv_kernel"),
    (dict(gamma="big"), "gamma"),
])
def test_impossible_configs_fail_clearly(kwargs, setting):
    with pytest.raises(achilles.ConfigError) as err:
        achilles.create_model("mamba2", **kwargs)
    assert err.value.setting == setting
    assert setting in str(err.value)


def test_heads_error_names_the_inner_dimension():
    with pytest.raises(achilles.ConfigError, match="inner dimension expand \\* d_model = 64"):
        achilles.create_model("mamba2", n_heads=3)


def test_unknown_setting_is_a_config_error():
    with pytest.raises(achilles.ConfigError, match="no such setting"):
        achilles.create_model("mamba2", heads=2)


def test_sequence_longer_than_positional_capacity():
    model = achilles.create_model("mamba2-posenc", max_len=8)
    with pytest.raises(achilles.ConfigError, match="max_len"):
        model(torch.zeros(1, 9, dtype=torch.long))
    achilles.create_model("mamba2", max_len=8)(torch.zeros(1, 9, dtype=torch.long))  # no pos. encoding


def test_parameter_count_is_sane():
    n = achilles.create_model("mamba2", d_model=32).num_parameters()
    layer = 32 * (2 * 64 + 2 * 128 + 1) + (64 + 256) * 5 + 3 + 64 + 64 * 32 + 32
    assert n == 2 * layer + 2 * 256 * 32 + 32
    assert math.isfinite(n)


# -- which compute path, and why ----------------------------------------------------------------
def test_each_layer_says_which_path_it_took_and_why():
    from torch.func import functional_call, vmap

    model = tiny("mamba2", quadratic_max_len=10)
    model(torch.randint(0, 37, (2, 7)))
    assert [layer.path for layer in model.layers] == ["fast", "fast"]
    assert "cpu input" in model.layers[0].path_reason
    with model.hooks(read=["layers.1.ssm.B"]):
        model(torch.randint(0, 37, (2, 7)))
    assert [layer.path for layer in model.layers] == ["fast", "modular"]
    assert "hook point" in model.layers[1].path_reason
    model(torch.randint(0, 37, (2, 12)))          # longer than quadratic_max_len: chunked SSD
    assert model.layers[0].path == "modular" and "chunked" in model.layers[0].path_reason
    params = dict(model.named_parameters())
    vmap(lambda t: functional_call(model, params, (t,)))(torch.randint(0, 37, (3, 2, 7)))
    assert model.layers[0].path == "modular" and "torch.func" in model.layers[0].path_reason
    glob = tiny("mamba2-global")
    glob(torch.randint(0, 37, (2, 7)))
    assert glob.layers[0].path == "modular" and "global" in glob.layers[0].path_reason


def test_the_switch_runs_the_path_it_names(monkeypatch):
    """``choose_path`` is the one switch: ``forward`` runs the path it names, in its order of rules
    (a hook point or ``force_path`` -> modular; the kernels when allowed -> fused; else fast on CPU)."""
    from achilles.plugins.archs import fused
    from achilles.plugins.archs.mamba2 import Mamba2Layer

    ran = []

    def recording(path, function):
        def run(layer, h):
            ran.append(path)
            return function(layer, h)
        return run

    modular = Mamba2Layer.forward_modular
    monkeypatch.setattr(Mamba2Layer, "forward_modular", recording("modular", modular))
    monkeypatch.setattr(mamba2_fast, "mamba2_layer_forward", recording("fast", mamba2_fast.mamba2_layer_forward))
    # the kernels stood in on CPU by the block itself: only which path runs is tested here
    monkeypatch.setattr(fused, "mamba2_layer_forward", recording("fused", modular))
    tokens = torch.randint(0, 37, (2, 7))

    def paths(model, **hooks):
        ran.clear()
        with model.hooks(**hooks):
            model(tokens)
        taken = [layer.path for layer in model.layers]
        assert ran == taken, (ran, taken)  # each layer ran the path it reports, once
        return taken

    for backend in ("auto", "torch"):
        model = tiny("mamba2", backend=backend)
        assert paths(model) == ["fast", "fast"]
        assert backend in model.layers[0].path_reason
        assert paths(model, read=["layers.1.ssm.y"]) == ["fast", "modular"]
        model.layers[0].force_path = "modular"
        assert paths(model) == ["modular", "fast"] and model.layers[0].path_reason == "forced (layer.force_path)"
    assert paths(tiny("mamba2-global")) == ["modular", "modular"]

    monkeypatch.setattr(fused, "kernels_allowed", lambda backend, x: (True, "stand-in kernels"))
    model = tiny("mamba2")
    assert paths(model) == ["fused", "fused"] and model.layers[0].path_reason == "stand-in kernels"
    assert paths(model, read=["layers.1.ssm.matrix"]) == ["fused", "modular"]
    model.layers[0].force_path = "modular"
    assert paths(model) == ["modular", "fused"]
    assert paths(tiny("mamba2-global")) == ["fused", "fused"]  # the kernels cover the global selection


def test_the_layer_is_built_from_its_typed_config():
    from achilles.plugins.archs.mamba2 import Mamba2Config, Mamba2Layer

    model = tiny("mamba2-global", n_heads=2)
    torch.manual_seed(0)
    layer = Mamba2Layer(Mamba2Config(**model.config), 0)
    expect = {k: v.shape for k, v in model.layers[0].state_dict().items()}
    assert {k: v.shape for k, v in layer.state_dict().items()} == expect
    assert (layer.ssm_input, layer.dt_source, layer.dims.n_heads) == ("conv", "global", 2)
