"""The example plugin's components: its task, architecture, probe and recipe. This module
imports torch; the plugin's entry-point module (``__init__.py``) imports it only inside the
registration hooks, so that ``achilles --help`` and shell completion never load torch for it."""

from __future__ import annotations

import json

import torch
from torch import nn

import achilles
from achilles import Batch, ConfigError, HookedModel, HookPoint, Probe, ProbeContext, ProbeOption, Task


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


class ResidualNormProbe(Probe):
    """Mean L2 norm of the residual stream after each layer, on the task's test split.

    Reads the hook points ``resid.*`` (one per layer) and nothing else of the model."""

    required_sites = ("resid.*",)
    options = (ProbeOption("samples", int, 256, "sequences drawn from the test split"),)

    def run(self, model, task, context: ProbeContext, **options) -> dict:
        samples = self.resolve_options(options)["samples"]  # an unknown option is refused here
        if samples < 1:
            raise ConfigError("samples", f"must be at least 1, got {samples}")
        batch = task.generate(task.headline_split, n=samples, seed=0).to(context.device)
        sites = model.hook_points("resid.*")
        with torch.no_grad(), model.hooks(read=sites) as cache:
            model(batch.tokens)
        norms = {site: cache[site].norm(dim=-1).mean().item() for site in sites}
        result = {
            "what": "mean L2 norm of the residual stream after each layer (test split)",
            "headline": {f"norm {site}": round(value, 4) for site, value in norms.items()},
            "table": {"headers": ["site", "mean norm"], "rows": [[s, round(v, 4)] for s, v in norms.items()]},
            "samples": samples,
        }
        context.out_dir.mkdir(parents=True, exist_ok=True)
        (context.out_dir / f"{self.name}.json").write_text(json.dumps(result, indent=2) + "\n")
        return result


# A recipe: the claim that a model with no token mixing still solves the successor task (each
# target depends on its own token only), checked on the example architecture in seconds.
EXAMPLE_PAPER = achilles.Paper("An example finding (no real paper)", "0000.00000", short="Example")


def successor_recipe():
    from achilles.recipes import Claim, Plan, Recipe, RunGroup, Source, at_least, rate

    return Recipe(
        name="example-successor-mlp",
        title="A per-position MLP solves the successor task",
        paper=EXAMPLE_PAPER, source="(example)",
        summary="The successor task needs no token mixing, so a per-position MLP should solve it.",
        plans={"quick": Plan(
            runs=(RunGroup("mlp", "example-mlp", "example-successor", seeds=2,
                           train={"epochs": 3, "batch_size": 64, "train_samples": 1024, "eval_samples": 256,
                                  "lr_peak": 1e-2}),),
            departures="(an example: not a paper's experiment)")},
        claims=(Claim("mlp-solves-successor", "A model without token mixing solves the successor task",
                      Source(EXAMPLE_PAPER, "(example)"), rate("mlp", "acc"), at_least(0.9),
                      "test accuracy of example-mlp, mean over seeds"),),
    )
