"""Hook points of every architecture: names, shapes, and that editing S / attention scores
changes exactly what the paper's blocking experiment needs."""

import copy

import pytest
import torch
import torch.nn.functional as F

import achilles


MAMBA_SITES = ["conv.out", "ssm.x", "ssm.B", "ssm.C", "ssm.dt", "ssm.matrix", "ssm.y", "out"]
ATTN_SITES = ["attn.q", "attn.k", "attn.v", "attn.scores", "attn.out", "mlp.out", "out"]
DELTA_SITES = ["attn.q", "attn.k", "attn.v", "attn.beta", "ssm.matrix", "attn.out", "mlp.out", "out"]


def tiny(name, **kw):
    torch.manual_seed(kw.pop("seed", 0))
    extra = dict(d_state=6) if name.startswith("mamba2") else {}
    return achilles.create_model(name, **{"vocab_size": 37, "d_model": 8, "max_len": 16, **extra, **kw}).double()


def test_hook_point_names_per_architecture():
    for name in achilles.list_architectures():
        model = tiny(name)
        if name.startswith("mamba"):  # mamba1 has the same sites
            per_layer = MAMBA_SITES
        elif name == "conv-transformer":
            per_layer = ["conv.out"] + ATTN_SITES
        elif name.startswith("deltanet"):
            per_layer = (["conv.out"] if name == "deltanet" else []) + DELTA_SITES
        elif name == "lstm":
            per_layer = ["out"]
        else:
            per_layer = ATTN_SITES
        expect = ["embed"] + [s for i in range(2) for s in [f"layers.{i}.{p}" for p in per_layer] + [f"resid.{i}"]]
        assert model.hook_points() == expect, name


def test_site_shapes_mamba2():
    model = tiny("mamba2", n_heads=2)
    with model.hooks(read=["*"]) as cache:
        model(torch.randint(0, 37, (3, 7)))
    shapes = {k: tuple(v.shape) for k, v in cache.items()}
    assert shapes["embed"] == (3, 7, 8)
    assert shapes["layers.0.conv.out"] == (3, 7, 16 + 12)
    assert shapes["layers.0.ssm.x"] == (3, 7, 16)
    assert shapes["layers.0.ssm.B"] == shapes["layers.0.ssm.C"] == (3, 7, 6)
    assert shapes["layers.0.ssm.dt"] == (3, 7, 2)
    assert shapes["layers.0.ssm.matrix"] == (3, 2, 7, 7)
    assert shapes["layers.1.ssm.y"] == (3, 7, 16)
    assert shapes["layers.1.out"] == shapes["resid.1"] == (3, 7, 8)
    assert torch.all(cache["layers.0.ssm.matrix"].triu(1) == 0)


def test_site_shapes_transformers():
    model = tiny("conv-transformer")
    with model.hooks(read=["*"]) as cache:
        model(torch.randint(0, 37, (3, 7)))
    assert cache["layers.0.conv.out"].shape == (3, 7, 4 * 8)
    assert cache["layers.0.attn.q"].shape == cache["layers.0.attn.k"].shape == (3, 7, 8)
    assert cache["layers.0.attn.v"].shape == (3, 7, 16)
    scores = cache["layers.1.attn.scores"]
    assert scores.shape == (3, 1, 7, 7)
    torch.testing.assert_close(scores.sum(-1), torch.ones(3, 1, 7, dtype=torch.float64))
    assert torch.all(scores.triu(1) == 0)
    torch.testing.assert_close(cache["layers.0.conv.out"], torch.cat(
        [cache["layers.0.attn.q"], cache["layers.0.attn.k"], cache["layers.0.attn.v"]], -1))


@pytest.mark.parametrize("name", ["mamba2", "mamba2-residual", "mamba2-gated", "mamba2-global"])
def test_hooked_matrix_is_exact_and_linear(name):
    """Reading S and writing it back changes nothing; adding delta to S[i, j] of layer 0 moves
    y_i of that layer by exactly delta * dt_j * x_j (y = S @ (x * dt) + D x)."""
    model = tiny(name)
    tokens = torch.randint(0, 37, (2, 9))
    plain = model(tokens)
    with model.hooks(read=["layers.0.ssm.*"], edit={"layers.0.ssm.matrix": lambda S, _: S.clone()}) as base:
        same = model(tokens)
    torch.testing.assert_close(same, plain, rtol=1e-12, atol=1e-12)
    i, j, delta = 6, 2, 0.37

    def bump(S, _site):
        S = S.clone()
        S[:, :, i, j] += delta
        return S

    with model.hooks(read=["layers.0.ssm.y"], edit={"layers.0.ssm.matrix": bump}) as edited:
        model(tokens)
    change = edited["layers.0.ssm.y"] - base["layers.0.ssm.y"]
    expect = delta * base["layers.0.ssm.dt"][:, j, :1] * base["layers.0.ssm.x"][:, j]
    torch.testing.assert_close(change[:, i], expect, rtol=1e-10, atol=1e-12)
    assert change[:, :i].abs().max() == 0 and change[:, i + 1:].abs().max() == 0


def _block(i, j, site):
    def fn(value, _site):
        value = value.clone()
        value[:, :, i, j] = 0
        return value
    return {site: fn}


@pytest.mark.parametrize("name,site", [("mamba2", "layers.{l}.ssm.matrix"), ("mamba2-posenc", "layers.{l}.ssm.matrix"),
                                       ("mamba1", "layers.{l}.ssm.matrix"), ("deltanet", "layers.{l}.ssm.matrix"),
                                       ("deltanet-noconv", "layers.{l}.ssm.matrix"),
                                       ("transformer", "layers.{l}.attn.scores"),
                                       ("conv-transformer", "layers.{l}.attn.scores"),
                                       ("transformer-rope", "layers.{l}.attn.scores"),
                                       ("transformer-nope", "layers.{l}.attn.scores")])
def test_blocking_one_entry_changes_only_downstream(name, site):
    """Blocking the attention from token j to token i in layer l changes that layer's output at
    position i only; later layers mix position i forward. So: logits before i never change, at i
    they do; with a single layer nothing after i changes either."""
    i, j = 5, 2
    tokens = torch.randint(0, 37, (4, 9))
    for n_layers, layer in ((1, 0), (2, 0), (2, 1)):
        model = tiny(name, n_layers=n_layers)
        with model.hooks(edit={site.format(l=layer): lambda v, _: v}):  # same compute path, unedited
            plain = model(tokens)
        torch.testing.assert_close(plain, model(tokens), rtol=1e-12, atol=1e-12)
        with model.hooks(edit=_block(i, j, site.format(l=layer))):
            blocked = model(tokens)
        diff = (blocked - plain).abs().amax(dim=(0, 2))
        assert torch.all(diff[:i] == 0), (n_layers, layer, diff)
        assert diff[i] > 1e-8, (n_layers, layer, diff)
        if n_layers == 1 or layer == n_layers - 1:
            assert torch.all(diff[i + 1:] == 0), (n_layers, layer, diff)


def test_editing_other_sites_changes_output():
    model = tiny("mamba2")
    tokens = torch.randint(0, 37, (2, 6))
    plain = model(tokens)
    for site in ["layers.0.conv.out", "layers.0.ssm.x", "layers.0.ssm.B", "layers.0.ssm.C", "layers.0.ssm.dt",
                 "layers.0.ssm.y", "layers.0.out", "resid.0", "embed"]:
        with model.hooks(edit={site: lambda v, _: v * 1.5}):
            assert (model(tokens) - plain).abs().max() > 1e-6, site


def test_unembed_residual_is_the_logit_lens_of_the_last_layer():
    for name in ("mamba2", "transformer"):
        model = tiny(name)
        tokens = torch.randint(0, 37, (2, 6))
        with model.hooks(read=["resid.*"]) as cache:
            logits = model(tokens)
        torch.testing.assert_close(model.unembed_residual(cache["resid.1"]), logits)
        assert model.unembed_residual(cache["resid.0"]).shape == logits.shape


def test_transformer_matches_explicit_attention():
    model = tiny("transformer", n_layers=1)
    tokens = torch.randint(0, 37, (2, 6))
    layer = model.layers[0]
    h = model.embed.weight[tokens] + model.pos_embed.weight[:6]
    q, k, v = (F.layer_norm(h, (8,), layer.norm1.weight, layer.norm1.bias) @ layer.qkv_proj.weight.t()).split([8, 8, 16], -1)
    att = (q @ k.transpose(1, 2) / 8 ** 0.5).masked_fill(torch.ones(6, 6, dtype=torch.bool).triu(1), float("-inf"))
    h = h + att.softmax(-1) @ v @ layer.o_proj.weight.t()
    h = h + F.silu(F.layer_norm(h, (8,), layer.norm2.weight, layer.norm2.bias) @ layer.ff_in.weight.t()) @ layer.ff_out.weight.t()
    torch.testing.assert_close(model(tokens), model.unembed_residual(h))
    with model.hooks(read=["layers.0.attn.scores"]):  # explicit-attention path, same values
        torch.testing.assert_close(model(tokens), model.unembed_residual(h))


def test_transformer_shapes_follow_appendix_e2():
    model = achilles.create_model("transformer", d_model=128)
    layer = model.layers[0]
    assert layer.qkv_proj.weight.shape == (128 + 128 + 256, 128)
    assert layer.o_proj.weight.shape == (128, 256)
    assert layer.ff_in.weight.shape == (128, 128) and layer.ff_out.weight.shape == (128, 128)
    with pytest.raises(achilles.ConfigError, match="n_heads"):
        achilles.create_model("transformer", d_model=32, n_heads=3)


def test_conv_kernels():
    assert [k.shape for k in tiny("mamba2").conv_kernels()] == [(28, 4), (28, 4)]
    assert [k.shape for k in tiny("conv-transformer").conv_kernels()] == [(32, 4), (32, 4)]
    assert tiny("transformer").conv_kernels() == []


def test_backend_auto_is_torch_on_cpu_and_fused_needs_cuda():
    for name in ("mamba2", "transformer"):
        model = achilles.create_model(name, backend="auto")
        model(torch.randint(0, 256, (2, 5)))
        if not torch.cuda.is_available():
            with pytest.raises(achilles.ConfigError, match="CUDA"):
                achilles.create_model(name, backend="fused")


def test_vmapped_ensemble_forward_matches_members():
    """The ensemble trainer stacks members with torch.func; the layers then use plain ops."""
    from torch.func import functional_call, stack_module_state, vmap
    for name in ("mamba2", "mamba2-allone", "conv-transformer"):
        models = [tiny(name, seed=s).float() for s in range(3)]
        params, buffers = stack_module_state(models)
        base = copy.deepcopy(models[0])
        forward = vmap(lambda p, b, t: functional_call(base, (p, b), (t,)), in_dims=(0, 0, 0))
        tokens = torch.randint(0, 37, (3, 4, 7))
        out = forward(params, buffers, tokens)
        for m in range(3):
            torch.testing.assert_close(out[m], models[m](tokens[m]), rtol=1e-4, atol=1e-5)
        out.square().mean().backward()


def test_list_archs_shows_every_architecture_with_parameter_counts():
    from click.testing import CliRunner

    from achilles.cli.commands.listing import list_command
    result = CliRunner().invoke(list_command, ["archs"])
    assert result.exit_code == 0, result.output
    for name in ["mamba2", "mamba2-allone", "mamba2-posenc", "mamba2-residual", "mamba2-gated",
                 "mamba2-global", "transformer", "conv-transformer", "transformer-rope", "transformer-nope",
                 "mamba1", "deltanet", "deltanet-noconv", "lstm"]:
        line = next(l for l in result.output.splitlines() if l.startswith(name + " "))
        assert "k" in line.split()[1], line
