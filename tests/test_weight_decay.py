"""Weight decay as Mamba's authors apply it: parameters marked ``_no_weight_decay`` (mamba2's A_log,
D and dt_bias) are in an AdamW group of weight decay 0, in the single-run and ensemble trainers;
checkpoints with two groups resume exactly, older one-group checkpoints resume without losing state."""

import pytest
import torch

from achilles.training.checkpoint import save_checkpoint
from achilles.training.ensemble import EnsembleTrainer, VmapStepper
from achilles.runs.folder import RunFolder
from achilles.models.loading import load_run
from achilles.training.trainer import no_weight_decay_names, resume_run, start_run

MODEL = {"n_layers": 2, "d_model": 8, "d_state": 8}
TINY = dict(profile="quick", epochs=2, train_samples=128, eval_samples=32, batch_size=64, progress=False)
MARKED = ("A_log", "D", "dt_bias")


def _start(tmp_path, name, seed=0, arch="mamba2", **settings):
    return start_run(arch, "composite", out=tmp_path / name, seed=seed, model_config=MODEL, **{**TINY, **settings})


def _marked(names):
    return {n for n in names if n.rsplit(".", 1)[-1] in MARKED}


def _zero_grad_step(optimizer, params, lr=0.5):
    """One AdamW step with zero gradients: Adam's update is 0, only the decoupled decay acts."""
    for group in optimizer.param_groups:
        group["lr"] = lr
    for p in params:
        p.grad = torch.zeros_like(p)
    optimizer.step()


def test_the_trainer_does_not_decay_the_marked_parameters(tmp_path):
    trainer = _start(tmp_path, "r")
    named = dict(trainer.model.named_parameters())
    marked = _marked(named)
    assert len(marked) == 3 * MODEL["n_layers"] and no_weight_decay_names(trainer.model) == marked
    decay, quiet = trainer.optimizer.param_groups
    assert decay["weight_decay"] == trainer.settings.weight_decay == 1e-2 and quiet["weight_decay"] == 0.0
    assert {id(p) for p in quiet["params"]} == {id(named[n]) for n in marked}
    assert {id(p) for p in decay["params"]} == {id(p) for n, p in named.items() if n not in marked}

    before = {n: p.detach().clone() for n, p in named.items()}
    _zero_grad_step(trainer.optimizer, named.values())
    for n, p in named.items():
        if n in marked:
            assert torch.equal(p, before[n]), n
        else:
            assert torch.allclose(p, before[n] * (1 - 0.5 * 1e-2)), n
    trainer.close()


def test_an_architecture_without_marks_keeps_one_group(tmp_path):
    import achilles
    import toy_plugin

    achilles.register_plugin(toy_plugin, "toy")
    trainer = start_run("toy-mixer", "toy-count", out=tmp_path / "t", **{**TINY, "train_samples": 64})
    assert len(trainer.optimizer.param_groups) == 1 and not no_weight_decay_names(trainer.model)
    trainer.close()


def test_the_ensemble_stepper_does_not_decay_the_marked_parameters(tmp_path):
    trainers = [_start(tmp_path, f"e{s}", seed=s) for s in (0, 1)]
    stepper = VmapStepper(trainers)
    marked = _marked(stepper.params)
    assert len(marked) == 3 * MODEL["n_layers"]
    decay, quiet = stepper.optimizer.param_groups
    assert decay["weight_decay"] == 1e-2 and quiet["weight_decay"] == 0.0
    assert {id(p) for p in quiet["params"]} == {id(stepper.params[n]) for n in marked}
    before = {n: p.detach().clone() for n, p in stepper.params.items()}
    _zero_grad_step(stepper.optimizer, stepper.params.values())
    for n, p in stepper.params.items():
        if n in marked:
            assert torch.equal(p, before[n]), n
        else:
            assert torch.allclose(p, before[n] * (1 - 0.5 * 1e-2)), n
    for t in trainers:
        t.close()


def test_an_interrupted_vmap_ensemble_with_two_groups_resumes_to_the_one_by_one_weights(tmp_path, monkeypatch):
    for seed in (0, 1):
        assert _start(tmp_path, f"one{seed}", seed=seed).fit().status == "finished"
    ensemble = EnsembleTrainer([_start(tmp_path, f"cut{seed}", seed=seed) for seed in (0, 1)], method="vmap",
                               progress=False)
    step, calls = VmapStepper.step, {"n": 0}

    def interrupt_in_epoch_two(*args):
        calls["n"] += 1
        if calls["n"] == 2 + 1:  # 2 steps per epoch: the 1st step of epoch 2
            raise KeyboardInterrupt
        return step(*args)

    monkeypatch.setattr(VmapStepper, "step", interrupt_in_epoch_two)
    assert [r.status for r in ensemble.fit()] == ["interrupted"] * 2
    monkeypatch.undo()
    resumed = [resume_run(tmp_path / f"cut{seed}", progress=False) for seed in (0, 1)]
    assert [len(t.optimizer.param_groups) for t in resumed] == [2, 2]
    assert [r.status for r in EnsembleTrainer(resumed, method="vmap", progress=False).fit()] == ["finished"] * 2
    for seed in (0, 1):
        a, b = load_run(tmp_path / f"one{seed}").model.state_dict(), load_run(tmp_path / f"cut{seed}").model.state_dict()
        for k in a:
            assert torch.allclose(a[k], b[k], rtol=0, atol=1e-5), k


def test_a_one_group_checkpoint_resumes_with_its_state_kept(tmp_path, caplog):
    """A checkpoint saved before the no-decay group (one AdamW group over model.parameters())."""
    trainer = _start(tmp_path, "old")
    old = torch.optim.AdamW(trainer.model.parameters(), lr=1e-3, weight_decay=1e-2)
    trainer.model(torch.randint(0, 8, (2, 8))).square().mean().backward()
    old.step()
    save_checkpoint(trainer.run, 1, trainer.model, old)
    trainer.close()
    RunFolder(tmp_path / "old").update_config(status="interrupted")
    resumed = resume_run(tmp_path / "old", progress=False)
    assert "not decayed" in caplog.text
    assert resumed.epoch == 1 and [g["weight_decay"] for g in resumed.optimizer.param_groups] == [1e-2, 0.0]
    old_params = dict(trainer.model.named_parameters())
    for name, p in resumed.model.named_parameters():
        state, was = resumed.optimizer.state[p], old.state[old_params[name]]
        assert torch.equal(state["exp_avg"], was["exp_avg"]) and torch.equal(state["exp_avg_sq"], was["exp_avg_sq"]), name
    assert resumed.fit().status == "finished"


@pytest.mark.parametrize("arch", ["mamba2"])
def test_a_two_group_checkpoint_round_trips(tmp_path, arch):
    trainer = _start(tmp_path, "rt", arch=arch, epochs=2)
    named = dict(trainer.model.named_parameters())
    trainer.model(torch.randint(0, 8, (2, 8))).square().mean().backward()
    trainer.optimizer.step()
    trainer.epoch = 1
    trainer.save_checkpoint()
    trainer.close()
    RunFolder(tmp_path / "rt").update_config(status="interrupted")
    resumed = resume_run(tmp_path / "rt", progress=False)
    assert resumed.optimizer.state_dict()["param_groups"] == trainer.optimizer.state_dict()["param_groups"]
    for name, p in resumed.model.named_parameters():
        assert torch.equal(resumed.optimizer.state[p]["exp_avg"], trainer.optimizer.state[named[name]]["exp_avg"])
    resumed.close()
