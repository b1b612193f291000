"""The initialisation rate gamma of Achilles' Heel §4 (after Luo et al., 2021)."""

from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def init_gamma_(module: nn.Module, gamma: float, generator: torch.Generator | None = None,
                skip: tuple[str, ...] = ()) -> None:
    """Draw every weight W in R^{d1 x d2} from N(0, (1/d1^gamma)^2).

    d1 is the weight's fan-in (torch's convention: ``shape[1] * prod(shape[2:])``;
    the input dimension of a Linear, d_model for an Embedding, the kernel width for a
    depthwise conv). Choice: only tensors with two or more dimensions are weights in
    this sense; biases, norm scales and the SSM's A_log, dt_bias and D keep the
    Mamba2 defaults, and parameters whose name contains any of ``skip`` are left alone.
    """
    for name, param in module.named_parameters():
        if param.dim() < 2 or any(s in name for s in skip):
            continue
        fan_in = param.shape[1] * (param[0][0].numel() if param.dim() > 2 else 1)
        param.normal_(0.0, fan_in ** (-gamma), generator=generator)
