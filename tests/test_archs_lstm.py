"""lstm: torch's nn.LSTM in the pre-norm residual block, against the LSTM equations written here;
its sites, init, settings; the probes that cannot apply say so in one line; a run that trains,
resumes and is evaluated, and an ensemble that falls back to training member by member."""

import pytest
import torch
from click.testing import CliRunner

import achilles
from achilles.cli.main import cli
from resume_check import assert_resumes_exactly


def tiny(**kw):
    torch.manual_seed(kw.pop("seed", 0))
    return achilles.create_model("lstm", **{"vocab_size": 37, "d_model": 8, "max_len": 16, **kw}).double()


def rms(x, w, eps=1e-5):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def reference_logits(model, tokens):
    """i, f, g, o = W_ih x + b_ih + W_hh h + b_hh (torch's gate order); c = f c + i g; h = o tanh(c)."""
    stream = model.embed.weight[tokens]
    for layer in model.layers:
        lstm, x = layer.lstm, rms(stream, layer.norm.weight)
        n, length, d = x.shape
        h = c = torch.zeros(n, d, dtype=x.dtype)
        outs = []
        for t in range(length):
            gates = x[:, t] @ lstm.weight_ih_l0.t() + lstm.bias_ih_l0 + h @ lstm.weight_hh_l0.t() + lstm.bias_hh_l0
            i, f, g, o = gates.chunk(4, -1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
            outs.append(h)
        stream = stream + torch.stack(outs, 1)
    return rms(stream, model.final_norm.weight) @ model.unembed.weight.t()


def test_model_matches_the_lstm_equations():
    model = tiny()
    tokens = torch.randint(0, 37, (3, 11))
    torch.testing.assert_close(model(tokens), reference_logits(model, tokens), rtol=1e-10, atol=1e-10)


def test_sites_shapes_init_and_size():
    model = tiny()
    assert model.hook_points() == ["embed", "layers.0.out", "resid.0", "layers.1.out", "resid.1"]
    with model.hooks(read=["*"]) as cache:
        model(torch.randint(0, 37, (2, 5)))
    assert all(v.shape == (2, 5, 8) for v in cache.values())
    torch.manual_seed(0)
    big = achilles.create_model("lstm", d_model=64, gamma=0.5)
    w = big.layers[0].lstm.weight_hh_l0
    assert w.shape == (256, 64) and w.std().item() == pytest.approx(64 ** -0.5, rel=0.08)
    layer = 8 + 2 * 4 * 8 * 8 + 2 * 4 * 8  # norm, two matrices, two biases
    assert tiny().num_parameters() == 2 * layer + 2 * 37 * 8 + 8
    cfg = achilles.create_model("lstm").config
    assert (cfg["d_model"], cfg["n_layers"], cfg["pos_enc"]) == (32, 2, False)
    assert tiny().conv_kernels() == []


@pytest.mark.parametrize("kwargs,setting", [(dict(backend="magic"), "backend"), (dict(pos_enc=1), "pos_enc"),
                                            (dict(d_state=4), "d_state"), (dict(norm_eps=0), "norm_eps")])
def test_bad_settings_are_config_errors(kwargs, setting):
    with pytest.raises(achilles.ConfigError, match=setting):
        achilles.create_model("lstm", **kwargs)


def test_every_probe_says_in_one_line_that_it_does_not_apply(tmp_path, monkeypatch):
    from achilles.runs.layout import INIT_WEIGHTS
    from achilles.runs.folder import RunFolder

    task = achilles.get_task("composite")
    torch.manual_seed(0)
    model = achilles.create_model("lstm", vocab_size=task.vocab_size, max_len=task.seq_len, d_model=16)
    for probe in ("blocking", "information-flow", "substitution", "conv-similarity"):
        with pytest.raises(achilles.AchillesError) as err:
            achilles.get_probe(probe).check(model, task)
        assert "\n" not in str(err.value) and "'lstm'" in str(err.value), str(err.value)
    run = RunFolder(tmp_path / "run")  # and through `achilles probe`
    run.save_weights(model.state_dict(), name=INIT_WEIGHTS)
    sha = run.save_weights(model.state_dict())
    run.write_config({"arch": "lstm", "model": dict(model.config), "task": "composite",
                      "task_config": dict(task.config), "seed": 0, "status": "finished", "weights_sha256": sha})
    result = CliRunner().invoke(cli, ["probe", str(tmp_path / "run"), "--probe", "blocking"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if "'lstm'" in line]
    assert len(lines) == 1 and "blocking" in lines[0], result.output


def test_train_resume_and_evaluate(tmp_path):
    common = dict(profile="quick", model_config={"n_layers": 2, "d_model": 16}, seed=2, epochs=2,
                  train_samples=64, eval_samples=8, batch_size=16, progress=False)
    assert_resumes_exactly("lstm", "copy", tmp_path, task_config={"min_size": 1, "max_size": 3}, **common)


def test_ensemble_trains_lstm_members_in_a_loop_when_vmap_cannot(tmp_path):
    from achilles.training.ensemble import EnsembleTrainer
    from achilles.training.trainer import start_run

    common = dict(profile="quick", model_config={"n_layers": 1, "d_model": 8}, epochs=1, train_samples=32,
                  eval_samples=8, batch_size=16, progress=False, task_config={"min_size": 1, "max_size": 3})
    trainers = [start_run("lstm", "copy", out=tmp_path / f"s{seed}", seed=seed, **common) for seed in (0, 1)]
    results = EnsembleTrainer(trainers).fit()
    assert [r.status for r in results] == ["finished", "finished"]
