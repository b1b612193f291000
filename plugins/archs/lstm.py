"""LSTM: the fixed-size-state baseline of the atlas, torch's ``nn.LSTM`` as the token mixer of the
same pre-norm residual block as the Mamba layers (the simplest control for the COPY bound: a
recurrent state of 2 d_model numbers per layer, no selection, no convolution, no attention).

One layer, for the residual stream h (N, S, d_model)::

    out, _  = LSTM(RMSNorm(h))      one layer, hidden size d_model, zero initial state   -> out
    h      <- h + out                                                                     -> resid.{i}

Model: token embedding (+ learned positional encoding with ``pos_enc``, off by default) -> layers
-> final RMSNorm -> unembedding (untied). d_model 32 and 2 layers by default, like every
architecture here. Init: the input-to-hidden and hidden-to-hidden matrices (4 d_model x d_model,
fan-in d_model), embedding and unembedding by the init rate gamma; the LSTM's biases keep torch's
default U(-1/sqrt(d_model), 1/sqrt(d_model)); norms 1.

Hook points: ``layers.{i}.out`` and ``resid.{i}``. There is no convolution and no token-mixing
matrix (the LSTM's mixing is nonlinear), so the probes that need ``ssm.matrix``/``attn.scores``
(blocking, information-flow), ``conv.out`` (substitution) or a kernel (conv-similarity) say in
one line that they do not apply to 'lstm'. ``backend`` is accepted for the common settings and has
no effect: ``nn.LSTM`` runs cuDNN by itself on a CUDA input. Under ``torch.func.vmap`` (a vmapped
ensemble) ``nn.LSTM`` has no batching rule; the ensemble trainer then trains member by member.
Under bf16 autocast on a CPU the LSTM itself runs in fp32 (the norms and unembedding follow
autocast): oneDNN in torch 2.4 cannot build a bf16 LSTM on a CPU without bf16 units.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from achilles import HookPoint, ModelConfig, model_factory

from .common import BACKENDS, TokenModel, check_choice, presets, require
from .ops import RMSNorm

__all__ = ["ARCHITECTURES", "LSTMConfig", "LSTMLayer", "LSTMModel", "build_lstm"]


class LSTMLayer(nn.Module):
    """Pre-norm LSTM mixer with its residual add. Sites: ``layers.{i}.out``, ``resid.{i}``."""

    def __init__(self, config: dict, index: int):
        super().__init__()
        d = config["d_model"]
        self.norm = RMSNorm(d, config["norm_eps"])
        self.lstm = nn.LSTM(d, d, num_layers=1, batch_first=True)
        self.hook_out = HookPoint("out")
        self.hook_resid = HookPoint(f"resid.{index}", absolute=True)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        x = self.norm(h)
        if x.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
            # torch 2.4's oneDNN has no bf16 LSTM on a CPU without bf16 units: the recurrence runs in fp32.
            with torch.autocast("cpu", enabled=False):
                out, _ = self.lstm(x.float())
        else:
            out, _ = self.lstm(x)
        return self.hook_resid(h + self.hook_out(out))


class LSTMModel(TokenModel):
    """LSTM language model: embedding (+ positional encoding) -> LSTM layers -> RMSNorm -> unembed."""

    def __init__(self, config: dict):
        layers = [LSTMLayer(config, i) for i in range(config["n_layers"])]
        super().__init__(config, layers, "rmsnorm", config["norm_eps"])
        self.init_weights(config["gamma"])
        self.name_hook_points()

    def conv_kernels(self) -> list[torch.Tensor]:
        """No convolution: [] (conv-similarity says it does not apply)."""
        return []


@dataclass
class LSTMConfig(ModelConfig):
    """lstm; see the module docstring."""

    pos_enc: bool = False
    norm_eps: float = 1e-5

    def validate(self) -> None:
        super().validate()
        check_choice(self.backend, "backend", BACKENDS)
        require(isinstance(self.pos_enc, bool), "pos_enc", f"must be true or false, got {self.pos_enc!r}")
        require(self.norm_eps > 0, "norm_eps", f"must be > 0, got {self.norm_eps!r}")


build_lstm = model_factory(LSTMConfig, LSTMModel)

VARIANTS: dict[str, tuple[dict, str]] = {
    "lstm": ({}, "LSTM (torch nn.LSTM, hidden d_model) in a pre-norm residual block: fixed-size-state baseline"),
}

#: tags of these architectures on model cards and the Hub
FAMILY_TAGS = ("rnn", "lstm")
ARCHITECTURES = presets(build_lstm, VARIANTS)
