"""transformer-rope and transformer-nope: rotary attention against Hugging Face's GPT-NeoX
attention (forward and gradients, same weights), relative positions only (rope), no positions
at all (nope), sequences longer than training, the settings each scheme refuses, and a run
that trains, resumes and is probed."""

import pytest
import torch
from click.testing import CliRunner

import achilles
from achilles.cli.main import cli
from achilles.plugins.archs.transformer import RotaryEmbedding
from resume_check import assert_resumes_exactly

SCHEMES = ["transformer", "transformer-rope", "transformer-nope"]


def tiny(name, **kw):
    torch.manual_seed(kw.pop("seed", 0))
    return achilles.create_model(name, **{"vocab_size": 37, "d_model": 8, "max_len": 16, **kw}).double()


# -- parity with transformers' GPT-NeoX rotary attention -------------------------------------------
def _neox(d_model, n_heads, base, fraction):
    transformers = pytest.importorskip("transformers")  # the optional `bench` extra
    from transformers.models.gpt_neox import modeling_gpt_neox as neox

    transformers.logging.set_verbosity_error()
    config = transformers.GPTNeoXConfig(
        hidden_size=d_model, num_attention_heads=n_heads, num_hidden_layers=1, intermediate_size=d_model,
        attention_bias=False, attention_dropout=0.0, max_position_embeddings=64,
        rope_parameters={"rope_type": "default", "rope_theta": base, "partial_rotary_factor": fraction})
    config._attn_implementation = "eager"
    return neox, neox.GPTNeoXAttention(config, layer_idx=0).eval(), neox.GPTNeoXRotaryEmbedding(config)


def _to_neox_rows(w, heads):
    """Our qkv_proj rows [q | k | v] (each heads x d_head) -> GPT-NeoX's per-head [q_h | k_h | v_h]."""
    q, k, v = w.chunk(3, dim=0)
    return torch.stack([t.reshape(heads, -1, t.shape[-1]) for t in (q, k, v)], dim=1).reshape(w.shape)


def _from_neox_rows(w, heads):
    per_head = w.reshape(heads, 3, -1, w.shape[-1])
    return torch.cat([per_head[:, i].reshape(-1, w.shape[-1]) for i in range(3)], dim=0)


@pytest.mark.parametrize("n_heads,fraction,base", [(1, 1.0, 10000.0), (2, 1.0, 500.0), (2, 0.25, 10000.0)])
def test_rotary_attention_matches_gpt_neox_forward_and_gradients(n_heads, fraction, base):
    d, length = 32, 16
    ours = achilles.create_model("transformer-rope", d_model=d, n_heads=n_heads, v_expand=1, rope_base=base,
                                 rope_fraction=fraction, n_layers=1).layers[0]
    neox, theirs, rotary = _neox(d, n_heads, base, fraction)
    with torch.no_grad():
        theirs.query_key_value.weight.copy_(_to_neox_rows(ours.qkv_proj.weight, n_heads))
        theirs.dense.weight.copy_(ours.o_proj.weight)
    x = torch.randn(2, length, d, generator=torch.Generator().manual_seed(1))
    x_ours, x_theirs = x.clone().requires_grad_(), x.clone().requires_grad_()
    mask = torch.full((length, length), torch.finfo(torch.float32).min).triu(1)[None, None]
    out_ours = ours.attention(x_ours)
    cos_sin = rotary(x_theirs, torch.arange(length)[None])
    out_theirs, _ = theirs(x_theirs, attention_mask=mask, position_embeddings=cos_sin)
    forward_err = (out_ours - out_theirs).abs().max().item()
    assert forward_err <= 1e-5, forward_err
    weights = torch.randn(out_ours.shape, generator=torch.Generator().manual_seed(2))
    (out_ours * weights).sum().backward()
    (out_theirs * weights).sum().backward()
    grads = {"x": (x_ours.grad, x_theirs.grad),
             "qkv": (ours.qkv_proj.weight.grad, _from_neox_rows(theirs.query_key_value.weight.grad, n_heads)),
             "out": (ours.o_proj.weight.grad, theirs.dense.weight.grad)}
    for name, (a, b) in grads.items():
        err = (a - b).abs().max().item()
        assert err <= 1e-5, (name, err)


def test_rotary_embedding_matches_apply_rotary_pos_emb():
    for fraction in (1.0, 0.5, 0.25):
        neox, _, rotary = _neox(16, 1, 10000.0, fraction)
        q, k = torch.randn(2, 2, 3, 11, 16, generator=torch.Generator().manual_seed(0))
        cos, sin = rotary(q, torch.arange(11)[None])
        expect = neox.apply_rotary_pos_emb(q, k, cos, sin)
        got = RotaryEmbedding(int(16 * fraction), 10000.0)(q, k)
        for a, b in zip(got, expect):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


# -- positions --------------------------------------------------------------------------------------
def _mask_prefix(shift):
    """Edit of attn.scores: queries at or after ``shift`` attend only to keys at or after it
    (renormalised: the softmax over those keys alone), so the tokens from ``shift`` on are the
    whole context of their outputs, as if the sequence started there."""
    def edit(scores, _site):
        kept = scores.clone()
        kept[..., shift:, :shift] = 0
        rows = kept[..., shift:, :]
        kept[..., shift:, :] = rows / rows.sum(-1, keepdim=True)
        return kept
    return edit


@pytest.mark.parametrize("name,invariant", [("transformer-rope", True), ("transformer-nope", True),
                                            ("transformer", False)])
def test_shifting_the_sequence_changes_outputs_only_with_absolute_positions(name, invariant):
    """The same key-value tokens at absolute positions 0.. and at shift.. (a prefix of other
    tokens masked out of the context): rope sees relative positions only and nope none, so their
    outputs agree; learned absolute positions make transformer's differ."""
    shift, n_layers = 5, 2
    model = tiny(name, n_layers=n_layers)
    gen = torch.Generator().manual_seed(4)
    pairs = torch.randint(0, 37, (3, 9), generator=gen)  # k1 v1 k2 v2 k3 v3 k4 v4 query-key
    shifted = torch.cat([torch.randint(0, 37, (3, shift), generator=gen), pairs], dim=1)
    sites = [f"layers.{i}.attn.scores" for i in range(n_layers)]
    with model.hooks(edit={s: _mask_prefix(0) for s in sites}):  # same compute path as the shifted one
        plain = model(pairs)
    with model.hooks(edit={s: _mask_prefix(shift) for s in sites}):
        moved = model(shifted)[:, shift:]
    gap = (moved - plain).abs().max().item()
    if invariant:
        assert gap < 1e-9, gap
    else:
        assert gap > 1e-3, gap


@pytest.mark.parametrize("name,invariant", [("transformer-nope", True), ("transformer-rope", False),
                                            ("transformer", False)])
def test_nope_sees_the_prefix_as_a_set(name, invariant):
    """One causal layer without positions: the last output depends on the earlier tokens only as
    a set (attention is permutation-invariant over its keys); with rotary or learned positions
    their order matters."""
    model = tiny(name, n_layers=1)
    tokens = torch.randint(0, 37, (4, 10), generator=torch.Generator().manual_seed(5))
    permuted = torch.cat([tokens[:, :-1].flip(1), tokens[:, -1:]], dim=1)
    gap = (model(tokens)[:, -1] - model(permuted)[:, -1]).abs().max().item()
    assert (gap < 1e-9) if invariant else (gap > 1e-3), gap


def test_rope_rotates_queries_and_keys_after_their_hook_points():
    model = tiny("transformer-rope", n_layers=1, n_heads=2)
    tokens = torch.randint(0, 37, (2, 7))
    with model.hooks(read=["layers.0.attn.*"]) as cache:
        logits = model(tokens)
    torch.testing.assert_close(logits, model(tokens))  # explicit attention = the sdpa path
    q, k = (cache[f"layers.0.attn.{s}"].reshape(2, 7, 2, 4).transpose(1, 2) for s in "qk")
    q, k = RotaryEmbedding(4, 10000.0)(q, k)
    expect = (q @ k.transpose(-1, -2) / 2).masked_fill(torch.ones(7, 7, dtype=torch.bool).triu(1), float("-inf"))
    torch.testing.assert_close(cache["layers.0.attn.scores"], expect.softmax(-1))


def test_same_hook_points_as_transformer():
    expect = tiny("transformer").hook_points()
    for name in SCHEMES[1:]:
        assert tiny(name).hook_points() == expect, name


def test_rope_and_nope_take_sequences_longer_than_max_len_transformer_does_not():
    tokens = torch.randint(0, 37, (2, 50))
    for name in ("transformer-rope", "transformer-nope"):
        model = tiny(name, max_len=8)
        assert "pos_embed.weight" not in model.state_dict()
        assert model(tokens).shape == (2, 50, 37)
    with pytest.raises(achilles.ConfigError, match="max_len"):
        tiny("transformer", max_len=8)(tokens)


def test_scheme_settings_and_their_checks():
    rope = tiny("transformer-rope").config
    assert rope["rope_base"] == 10000.0 and rope["rope_fraction"] == 1.0 and "pos_enc" not in rope
    assert "rope_base" not in tiny("transformer-nope").config and "pos_enc" not in tiny("transformer-nope").config
    assert achilles.create_model("transformer-rope", rope_base=500).config["rope_base"] == 500.0
    for name, setting in [("transformer", "rope_base"), ("conv-transformer", "rope_fraction"),
                          ("transformer-nope", "rope_base"), ("transformer-rope", "pos_enc"),
                          ("transformer-nope", "pos_enc")]:
        with pytest.raises(achilles.ConfigError, match=f"{setting}: architecture '{name}' has no such setting"):
            achilles.create_model(name, **{setting: 1})
    for settings, setting in [({"rope_base": 0}, "rope_base"), ({"rope_base": True}, "rope_base"),
                              ({"rope_fraction": 0}, "rope_fraction"), ({"rope_fraction": 1.5}, "rope_fraction"),
                              ({"d_model": 8, "rope_fraction": 0.1}, "rope_fraction")]:
        with pytest.raises(achilles.ConfigError, match=setting):
            achilles.create_model("transformer-rope", **settings)


def test_cli_refuses_a_rotary_base_on_transformer_in_one_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for arch in ("transformer", "transformer-nope"):
        r = CliRunner().invoke(cli, ["train", "--arch", arch, "--task", "inverse", "--model-set", "rope_base=500"])
        assert r.exit_code != 0 and "Traceback" not in r.output
        errors = [line for line in r.output.splitlines() if "rope_base" in line]
        assert len(errors) == 1 and f"'{arch}'" in errors[0], r.output
        assert list(tmp_path.iterdir()) == []  # no run folder (nor runs/)


def test_vmapped_ensemble_forward_matches_members():
    import copy

    from torch.func import functional_call, stack_module_state, vmap
    models = [tiny("transformer-rope", seed=s, n_heads=2, rope_fraction=0.5).float() for s in range(3)]
    params, buffers = stack_module_state(models)
    base = copy.deepcopy(models[0])
    tokens = torch.randint(0, 37, (3, 4, 7))
    out = vmap(lambda p, b, t: functional_call(base, (p, b), (t,)))(params, buffers, tokens)
    for m in range(3):
        torch.testing.assert_close(out[m], models[m](tokens[m]), rtol=1e-4, atol=1e-5)
    out.square().mean().backward()  # as the ensemble trainer does


# -- train, resume, evaluate longer, probe ------------------------------------------------------------
@pytest.mark.parametrize("name", ["transformer-rope", "transformer-nope"])
def test_train_resume_evaluate_beyond_the_trained_length_and_probe(name, tmp_path):
    from achilles.training.evaluation import evaluate
    from achilles.runs.folder import RunFolder
    from achilles.models.loading import load_run

    sizes = {"min_size": 1, "max_size": 3, "test_max_size": 4}
    common = dict(profile="quick", task_config=sizes, model_config={"n_layers": 1, "d_model": 8}, seed=2,
                  epochs=2, train_samples=64, eval_samples=8, batch_size=16, progress=False)
    assert_resumes_exactly(name, "copy", tmp_path, **common)
    assert [r["epoch"] for r in RunFolder(tmp_path / "cut").read_metrics()] == [1, 2]

    loaded = load_run(tmp_path / "cut")
    assert loaded.model.config["max_len"] == 9
    longer = achilles.get_task("copy", min_size=1, max_size=3, test_max_size=12)  # sequences of 25 tokens
    results = evaluate(loaded.model, longer, ["test"], samples=8, seed=0)
    assert 0 <= results["test"]["loss"] < float("inf")


@pytest.mark.parametrize("name", ["transformer-rope", "transformer-nope"])
def test_blocking_probe_cuts_the_attention(name, tmp_path):
    from achilles import ProbeContext

    task = achilles.get_task("composite")
    torch.manual_seed(0)
    model = achilles.create_model(name, vocab_size=task.vocab_size, max_len=task.seq_len, n_layers=2, d_model=16)
    result = achilles.get_probe("blocking").run(model, task, ProbeContext(tmp_path), samples=16, pair="34")
    assert result["settings"]["site"] == "attn.scores" and 0 <= result["mean_same"] <= 1
