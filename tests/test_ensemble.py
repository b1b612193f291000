"""Ensembled training gives the one-by-one results: same seeds -> same weights and accuracies."""

import json
import logging

import pytest
import torch

import achilles
from achilles.training.ensemble import EnsembleTrainer, VmapStepper, clip_grad_norm_per_member_
from achilles.errors import AchillesError
from achilles.runs.folder import RunFolder
from achilles.models.loading import load_run
from achilles.training.trainer import resume_run, start_run

import toy_plugin

# grad_clip 0.05: clipping is active on every step, with a different coefficient per member
TOY = dict(profile="quick", epochs=3, train_samples=192, eval_samples=32, batch_size=32, grad_clip=0.05,
           progress=False)
CELLS = [(0, 0.5), (1, 0.5), (2, 1.0)]  # (seed, gamma)


@pytest.fixture(autouse=True)
def toy():
    achilles.register_plugin(toy_plugin, "toy")


def _start(tmp_path, prefix, seed, gamma, arch="toy-mixer", task="toy-count", model=None, **settings):
    return start_run(arch, task, out=tmp_path / f"{prefix}-s{seed}-g{gamma}", seed=seed,
                     model_config={"gamma": gamma, **(model or {})}, **{**TOY, **settings})


def _assert_same_run(a, b, atol=1e-5):
    ra, rb = load_run(a), load_run(b)
    wa, wb = ra.model.state_dict(), rb.model.state_dict()
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.allclose(wa[k], wb[k], rtol=0, atol=atol), (k, (wa[k] - wb[k]).abs().max())
    ma, mb = RunFolder(a).read_metrics(), RunFolder(b).read_metrics()
    assert [r["epoch"] for r in ma] == [r["epoch"] for r in mb]
    for x, y in zip(ma, mb):  # accuracies identical, epoch by epoch, on every split
        for split in x["metrics"]:
            assert {k: v for k, v in x["metrics"][split].items() if k != "loss"} == \
                   {k: v for k, v in y["metrics"][split].items() if k != "loss"}
    assert ra.config["status"] == rb.config["status"] == "finished"


@pytest.mark.parametrize("method", ["vmap", "loop"])
def test_ensemble_equals_one_by_one(tmp_path, method):
    for seed, gamma in CELLS:
        assert _start(tmp_path, "one", seed, gamma).fit().status == "finished"
    trainers = [_start(tmp_path, method, seed, gamma) for seed, gamma in CELLS]
    ensemble = EnsembleTrainer(trainers, method=method, progress=False)
    results = ensemble.fit()
    assert ensemble.method_used == method
    assert [r.status for r in results] == ["finished"] * len(CELLS)
    for seed, gamma in CELLS:
        _assert_same_run(tmp_path / f"one-s{seed}-g{gamma}", tmp_path / f"{method}-s{seed}-g{gamma}")
    # every member is an ordinary run folder: config, weights, metrics, checkpoint
    config = RunFolder(results[0].path).read_config()
    assert config["final_metrics"]["test"]["acc"] == results[0].final_metrics["test"]["acc"]
    assert (results[0].path / "checkpoint" / "state.json").is_file()


def test_ensemble_of_first_party_mamba2_equals_one_by_one(tmp_path, caplog):
    """The real architecture on the real task (tiny): whichever method auto picks."""
    model = {"n_layers": 1, "d_model": 8, "d_state": 8}
    settings = dict(arch="mamba2", task="composite", model=model, epochs=2, train_samples=128,
                    eval_samples=64, batch_size=64)
    cells = [(0, 0.5), (1, 1.0)]
    for seed, gamma in cells:
        _start(tmp_path, "one", seed, gamma, **settings).fit()
    trainers = [_start(tmp_path, "ens", seed, gamma, **settings) for seed, gamma in cells]
    caplog.set_level(logging.INFO, logger="achilles")
    ensemble = EnsembleTrainer(trainers, progress=False)
    ensemble.fit()
    messages = caplog.messages
    # auto times one step of each method and keeps the faster
    assert any("one step takes" in m and f"using {ensemble.method_used}" in m for m in messages), messages
    for seed, gamma in cells:
        _assert_same_run(tmp_path / f"one-s{seed}-g{gamma}", tmp_path / f"ens-s{seed}-g{gamma}")


def test_interrupted_ensemble_resumes_to_the_one_by_one_weights(tmp_path, monkeypatch):
    for seed, gamma in CELLS[:2]:
        _start(tmp_path, "one", seed, gamma).fit()
    trainers = [_start(tmp_path, "cut", seed, gamma) for seed, gamma in CELLS[:2]]
    ensemble = EnsembleTrainer(trainers, method="vmap", progress=False)
    step, calls = VmapStepper.step, {"n": 0}

    def interrupt_in_epoch_two(*args):
        calls["n"] += 1
        if calls["n"] == 6 + 2:  # 6 steps per epoch: the 2nd step of epoch 2
            raise KeyboardInterrupt
        return step(*args)

    monkeypatch.setattr(VmapStepper, "step", interrupt_in_epoch_two)
    results = ensemble.fit()
    monkeypatch.undo()
    assert [r.status for r in results] == ["interrupted"] * 2
    assert all(RunFolder(r.path).read_config()["status"] == "interrupted" for r in results)
    resumed = [resume_run(r.path, progress=False) for r in results]
    assert [t.epoch for t in resumed] == [1, 1]
    assert [r.status for r in EnsembleTrainer(resumed, progress=False).fit()] == ["finished"] * 2
    for seed, gamma in CELLS[:2]:
        _assert_same_run(tmp_path / f"one-s{seed}-g{gamma}", tmp_path / f"cut-s{seed}-g{gamma}")


@pytest.mark.parametrize("method", ["vmap", "loop"])
def test_a_diverging_member_fails_alone(tmp_path, method, caplog):
    _start(tmp_path, "one", 0, 0.5).fit()
    trainers = [_start(tmp_path, method, seed, gamma) for seed, gamma in CELLS[:2]]
    with torch.no_grad():
        trainers[1].model.unembed.weight.fill_(float("nan"))
    results = EnsembleTrainer(trainers, method=method, progress=False).fit()
    assert [r.status for r in results] == ["finished", "failed"]
    assert RunFolder(results[1].path).read_config()["status"] == "failed"
    assert "loss became nan" in results[1].reason
    assert any("loss became nan" in m and "other members go on" in m for m in caplog.messages)
    _assert_same_run(tmp_path / "one-s0-g0.5", results[0].path)


def test_per_member_clipping_matches_clip_grad_norm():
    torch.manual_seed(0)
    grads = [torch.randn(3, 4, 5) * torch.tensor([0.01, 1.0, 50.0]).view(3, 1, 1), torch.randn(3, 7)]
    stacked = [torch.zeros_like(g, requires_grad=True) for g in grads]
    for p, g in zip(stacked, grads):
        p.grad = g.clone()
    clip_grad_norm_per_member_(stacked, 1.0, 3)
    for m in range(3):
        own = [torch.zeros_like(g[m], requires_grad=True) for g in grads]
        for p, g in zip(own, grads):
            p.grad = g[m].clone()
        torch.nn.utils.clip_grad_norm_(own, 1.0)
        for p, q in zip(stacked, own):
            assert torch.allclose(p.grad[m], q.grad, rtol=1e-6, atol=1e-7)


def test_runs_of_different_shapes_do_not_ensemble(tmp_path):
    a = _start(tmp_path, "a", 0, 0.5)
    b = _start(tmp_path, "b", 0, 0.5, model={"d_model": 16})
    with pytest.raises(AchillesError, match="parameter shapes differ"):
        EnsembleTrainer([a, b])
    c = _start(tmp_path, "c", 1, 0.5, epochs=4)
    with pytest.raises(AchillesError, match="training settings differ"):
        EnsembleTrainer([a, c])


def test_auto_falls_back_to_loop_when_vmap_cannot_batch(tmp_path, caplog):
    trainers = [_start(tmp_path, "x", seed, 0.5, epochs=1) for seed in (0, 1)]

    class _Opaque(torch.autograd.Function):  # old-style: no vmap support
        @staticmethod
        def forward(ctx, x):
            return x.clone()

        @staticmethod
        def backward(ctx, g):
            return g

    for t in trainers:
        t.model.unembed.register_forward_hook(lambda _m, _i, out: _Opaque.apply(out))
    caplog.set_level(logging.INFO, logger="achilles")
    ensemble = EnsembleTrainer(trainers, method="auto", progress=False)
    assert [r.status for r in ensemble.fit()] == ["finished", "finished"]
    assert ensemble.method_used == "loop" and "vmap cannot batch" in caplog.messages[0]
    assert json.loads((trainers[0].run.path / "metrics.jsonl").read_text().splitlines()[0])["ensemble"] == 2
