"""An example achilles plugin: a task and an architecture, registered through hooks."""

from __future__ import annotations

import torch
from torch import nn

import achilles
from achilles import Batch, ConfigError, HookedModel, HookPoint, Task, hookimpl


class SuccessorTask(Task):
    """Random tokens in [0, vocab); the target after each token is (token + 1) mod vocab.

    Splits are disjoint by construction: train sequences start with an even token,
    test sequences with an odd one."""

    splits = ("train", "test")
    headline_metric = "acc"

    def __init__(self, vocab: int = 16, length: int = 8):
        if vocab < 2:
            raise ConfigError("vocab", f"needs at least 2 tokens, got {vocab}")
        if length < 2:
            raise ConfigError("length", f"needs at least 2 positions, got {length}")
        super().__init__(vocab=vocab, length=length)
        self.vocab, self.length = vocab, length

    @property
    def vocab_size(self) -> int:
        return self.vocab

    @property
    def seq_len(self) -> int:
        return self.length

    def split_sizes(self) -> dict[str, int]:
        return {"train": 4096, "test": 512}

    def generate(self, split: str, n: int | None = None, seed: int = 0) -> Batch:
        if split not in self.splits:
            raise ConfigError("split", f"{split!r} is not one of {', '.join(self.splits)}")
        n = self.split_sizes()[split] if n is None else n
        gen = torch.Generator().manual_seed(seed * 2 + self.splits.index(split))
        tokens = torch.randint(0, self.vocab, (n, self.length), generator=gen)
        tokens[:, 0] = (tokens[:, 0] // 2) * 2 + (split == "test")
        tokens[:, 0] %= self.vocab
        targets = (tokens + 1) % self.vocab
        return Batch(tokens, targets, torch.ones_like(tokens, dtype=torch.bool))

    def metrics(self, logits: torch.Tensor, batch: Batch) -> dict[str, float]:
        correct = (logits.argmax(-1) == batch.targets)[batch.mask]
        return {"acc": correct.float().mean().item()}


class PositionwiseMLP(HookedModel):
    """Embedding -> one residual per-position MLP -> unembedding. No token mixing."""

    def __init__(self, vocab_size: int = 16, n_layers: int = 1, d_model: int = 32, gamma: float = 0.5,
                 max_len: int = 64, backend: str = "torch"):
        super().__init__()
        if n_layers != 1:
            raise ConfigError("n_layers", "example-mlp has exactly one layer")
        self.config = dict(vocab_size=vocab_size, n_layers=n_layers, d_model=d_model, gamma=gamma,
                           max_len=max_len, backend=backend)
        self.embedding = nn.Embedding(vocab_size, d_model)
        self.mlp = nn.Sequential(nn.Linear(d_model, 2 * d_model), nn.SiLU(), nn.Linear(2 * d_model, d_model))
        self.unembed = nn.Linear(d_model, vocab_size, bias=False)
        self.hook_embed = HookPoint("embed", absolute=True)
        self.hook_out = HookPoint("layers.0.out", absolute=True)
        self.hook_resid = HookPoint("resid.0", absolute=True)
        achilles.init_gamma_(self, gamma)
        self.name_hook_points()

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.hook_embed(self.embedding(tokens))
        x = self.hook_resid(x + self.hook_out(self.mlp(x)))
        return self.unembed(x)


@hookimpl
def register_tasks(register):
    register("example-successor", SuccessorTask, description="Predict the next token id (example plugin)")


@hookimpl
def register_architectures(register):
    register("example-mlp", PositionwiseMLP, description="Per-position MLP, no mixing (example plugin)")
