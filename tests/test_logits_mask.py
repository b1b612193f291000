"""Logits only where they are read: ``model(tokens, logits_mask=mask)`` returns the masked rows,
training and evaluation unembed only the scored positions, and models or tasks written for
full logits keep working."""

import pytest
import torch

import achilles
from achilles.training.evaluation import evaluate, predict_logits
from achilles.models.logits_mask import accepts_logits_mask, logits_at, task_loss
from achilles.training.epoch_loop import training_data
from achilles.training.trainer import start_run

import toy_plugin


def tiny(name):
    torch.manual_seed(0)
    extra = dict(d_state=6) if name.startswith("mamba2") else {}
    return achilles.create_model(name, vocab_size=37, d_model=8, max_len=16, **extra).double()


def random_mask(n, length, seed=0):
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand(n, length, generator=g) < 0.3
    mask[0] = False          # a sample with no scored position
    mask[1, -1] = True
    return mask


@pytest.mark.parametrize("name", ["mamba2", "mamba2-residual", "mamba2-global", "transformer", "conv-transformer",
                                  "transformer-rope", "transformer-nope", "mamba1",
                                  "deltanet", "deltanet-noconv", "lstm"])
def test_masked_logits_are_the_rows_of_the_full_logits_with_the_same_gradients(name):
    model = tiny(name)
    tokens = torch.randint(0, 37, (4, 9))
    mask = random_mask(4, 9)
    weights = torch.randn(int(mask.sum()), 37, dtype=torch.float64)
    grads = []
    for masked in (True, False):
        model.zero_grad()
        with model.hooks(read=["resid.*"]) as cache:
            logits = model(tokens, logits_mask=mask) if masked else model(tokens)[mask]
        (logits * weights).sum().backward()
        grads.append((logits.detach(), dict(cache), {k: p.grad.clone() for k, p in model.named_parameters()}))
    (sel, sel_cache, sel_grads), (full, full_cache, full_grads) = grads
    assert sel.shape == (int(mask.sum()), 37)
    torch.testing.assert_close(sel, full, rtol=1e-12, atol=1e-12)
    for site in full_cache:  # the hook points see the whole sequence either way
        torch.testing.assert_close(sel_cache[site], full_cache[site], rtol=0, atol=0)
    for key in full_grads:
        torch.testing.assert_close(sel_grads[key], full_grads[key], rtol=1e-10, atol=1e-12, msg=key)


def test_a_bad_mask_is_a_clear_error():
    model = tiny("mamba2")
    with pytest.raises(ValueError, match="logits_mask must be a bool tensor shaped like tokens"):
        model(torch.randint(0, 37, (2, 5)), logits_mask=torch.ones(2, 4, dtype=torch.bool))


class _Recording(torch.nn.Module):
    """A model written for full logits only, recording how it is called."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.calls = inner, []

    def forward(self, tokens):
        self.calls.append(tokens.shape)
        return self.inner(tokens)


def test_models_without_the_argument_get_their_full_logits_selected():
    achilles.register_plugin(toy_plugin, "toy")
    toy = achilles.create_model("toy-mixer").double()
    assert not accepts_logits_mask(toy) and accepts_logits_mask(tiny("mamba2"))
    model = _Recording(toy)
    tokens, mask = torch.randint(0, 8, (3, 6)), random_mask(3, 6)
    torch.testing.assert_close(logits_at(model, tokens, mask), toy(tokens)[mask])
    assert model.calls == [(3, 6)]  # one plain call, never with a logits_mask


def _unembed_rows(model):
    rows = []
    model.unembed.register_forward_hook(lambda _m, inp, _out: rows.append(inp[0].shape[:-1].numel()))
    return rows


def test_training_and_evaluation_unembed_only_the_scored_positions(tmp_path):
    trainer = start_run("mamba2", "mqar", out=tmp_path / "run", model_config=dict(d_model=8, d_state=4),
                        profile="quick", epochs=1, train_samples=64, eval_samples=32, batch_size=32,
                        progress=False)
    rows = _unembed_rows(trainer.model)
    trainer.fit()
    train, evals = training_data(trainer.task, trainer.settings, trainer.device)
    scored_per_sample = int(train.mask.sum(1).max())
    assert scored_per_sample == 4 and train.tokens.shape[1] == 64
    # 2 training steps of 32 samples, then each evaluation split in one chunk: 4 rows per sample
    assert rows[:2] == [32 * 4, 32 * 4]
    assert set(rows[2:]) == {32 * 4}


class _LossOverride(toy_plugin.CountTask):
    seen: list = []

    def loss(self, logits, batch):
        self.seen.append(logits.dim())
        return super().loss(logits, batch)


def test_a_task_that_overrides_loss_still_gets_full_logits():
    task = _LossOverride()
    model = tiny("mamba2")
    batch = task.generate("train", 8)
    loss = task_loss(task, model, batch)
    assert _LossOverride.seen == [3]
    torch.testing.assert_close(loss, torch.nn.functional.cross_entropy(model(batch.tokens)[:, -1].float(), batch.targets[:, -1]))


@pytest.mark.parametrize("task_name", ["mqar", "copy", "cot-lis", "composite"])
def test_evaluation_on_scored_positions_equals_metrics_of_full_logits(task_name):
    task = achilles.get_task(task_name)
    torch.manual_seed(0)
    model = achilles.create_model("mamba2", vocab_size=task.vocab_size, max_len=task.seq_len, d_model=8, d_state=4)
    batch = task.generate("test", 48, seed=1)
    with torch.no_grad():
        full = model(batch.tokens)
    expect = task.metrics(full, batch)
    expect["loss"] = task.loss(full, batch).item()
    got = evaluate(model, task, ["test"], data={"test": batch}, chunk_size=20)["test"]
    assert got.keys() == expect.keys()
    for key in expect:
        assert got[key] == pytest.approx(expect[key], rel=1e-5, abs=1e-6, nan_ok=True), key
    logits, compact = predict_logits(model, batch)
    assert logits.shape == (48, int(batch.mask.sum(1).max()), task.vocab_size)
    assert torch.equal(compact.targets[compact.mask], batch.targets[batch.mask])
