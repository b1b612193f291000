"""A tiny in-process plugin for the foundation tests (not shipped: tests only)."""

import json

import torch
from torch import nn

from achilles import Batch, HookedModel, HookPoint, Probe, ProbeContext, ProbeOption, Task, hookimpl


class CountTask(Task):
    """Tokens 0..vocab-1; target at the last position is the count of token 1."""

    capabilities = ("counting",)

    def __init__(self, vocab: int = 4, length: int = 6):
        super().__init__(vocab=vocab, length=length)
        self.vocab, self.length = vocab, length

    @property
    def vocab_size(self):
        return max(self.vocab, self.length + 1)

    @property
    def seq_len(self):
        return self.length

    def split_sizes(self):
        return {"train": 64, "test": 16}

    def generate(self, split, n=None, seed=0):
        n = n or self.split_sizes()[split]
        g = torch.Generator().manual_seed(seed)
        tokens = torch.randint(0, self.vocab, (n, self.length), generator=g)
        targets = torch.zeros_like(tokens)
        targets[:, -1] = (tokens == 1).sum(1)
        mask = torch.zeros_like(tokens, dtype=torch.bool)
        mask[:, -1] = True
        return Batch(tokens, targets, mask)

    def metrics(self, logits, batch):
        return {"acc": (logits.argmax(-1) == batch.targets)[batch.mask].float().mean().item()}


class TwoLayerToy(HookedModel):
    """Embedding, two causal cumulative-mean mixers with hook points, unembedding."""

    def __init__(self, vocab_size=8, n_layers=2, d_model=8, gamma=0.5, max_len=16, backend="torch"):
        super().__init__()
        self.config = dict(vocab_size=vocab_size, n_layers=n_layers, d_model=d_model, gamma=gamma,
                           max_len=max_len, backend=backend)
        self.embedding = nn.Embedding(vocab_size, d_model)
        self.layers = nn.ModuleList(_Mixer(d_model) for _ in range(n_layers))
        self.resid = nn.ModuleList(HookPoint(f"resid.{i}", absolute=True) for i in range(n_layers))
        self.unembed = nn.Linear(d_model, vocab_size)
        self.name_hook_points()

    def forward(self, tokens):
        x = self.embedding(tokens)
        for layer, hook in zip(self.layers, self.resid):
            x = hook(x + layer(x))
        return self.unembed(x)


class _Mixer(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.proj = nn.Linear(d, d)
        self.hook_mix = HookPoint("mix.out")
        self.hook_out = HookPoint("out")

    def forward(self, x):
        steps = torch.arange(1, x.shape[1] + 1, device=x.device).view(1, -1, 1)
        mixed = self.hook_mix(torch.cumsum(x, 1) / steps)
        return self.hook_out(self.proj(mixed))


class EchoProbe(Probe):
    """Writes down the options and context it receives (tests of the probe interface)."""

    requires = ("counting",)
    options = (
        ProbeOption("depth", int, 1, "how deep to look"),
        ProbeOption("label", str, "plain", "a label"),
        ProbeOption("verbose", bool, False, "say more"),
        ProbeOption("anything", None, None, "any JSON value"),
        ProbeOption("device", str, "none", "a name `achilles probe` uses itself: --set only"),
    )

    def run(self, model, task, context: ProbeContext, **options):
        opts = self.resolve_options(options)
        result = {"options": opts, "run_dir": str(context.run_dir), "arch": context.config.get("arch"),
                  "device": str(context.device), "what": "the options and context received",
                  "headline": {"depth": opts["depth"]}}
        context.out_dir.mkdir(parents=True, exist_ok=True)
        (context.out_dir / "echo.json").write_text(json.dumps(result))
        return result


@hookimpl
def register_tasks(register):
    register("toy-count", CountTask)


@hookimpl
def register_architectures(register):
    register("toy-mixer", TwoLayerToy, description="toy model for foundation tests")


@hookimpl
def register_probes(register):
    register("toy-echo", EchoProbe)
