"""The software and hardware a run trained on, recorded in its run.json as ``environment``.

Runs repeat exactly on one machine but not always across CPUs, torch versions or thread counts
(float reductions change order), so a reader comparing two retrains needs these to tell why.
"""

from __future__ import annotations

import platform
from typing import Any

import torch

from achilles.training.precision import cpu_description


def training_environment(device: torch.device | str) -> dict[str, Any]:
    """Python and torch versions, CPU model, torch's intra-op threads and, on CUDA, the GPU."""
    environment: dict[str, Any] = {
        "python": platform.python_version(), "torch": torch.__version__,
        "cpu": cpu_description()["model"], "torch_threads": torch.get_num_threads()}
    device = torch.device(device)
    if device.type == "cuda":
        environment["gpu"] = torch.cuda.get_device_name(device)
    return environment



def compute_paths(model: torch.nn.Module) -> list[str]:
    """Which compute path each kind of layer took in its last call ("compiled", "scan", "fused",
    "fast", ...), from the ``path`` its layers record: the same weights computed on another path
    differ in the last bits, which a long run can amplify, so a run says which one trained it."""
    paths = {f"{type(m).__name__}: {m.path}" for m in model.modules()
             if isinstance(getattr(m, "path", None), str) and getattr(m, "path") != ""}
    return sorted(paths)
