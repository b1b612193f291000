"""Mixed precision: the ``precision`` training setting (``fp32`` or ``bf16``).

``bf16`` runs the forward (and the loss) under ``torch.autocast(device, dtype=torch.bfloat16)``;
the weights, their gradients and the optimizer state stay fp32 (the master weights), and the loss
that is backpropagated, clipped against and recorded is cast to fp32. The end-of-epoch evaluation
of a bf16 run is in bf16 too, so the reported numbers are those of the model as it was trained.

Defaults (``default_precision``): the ``paper`` profile on a GPU that supports bf16 trains in bf16
(as mamba_ssm's training does); everything else (``quick`` on a CPU in particular) in fp32, pending
the measurement described in benchmarks/RESULTS-precision.md.

``cpu_description`` says which CPU this is and whether it has bf16 units (AMX-BF16 or
AVX512-BF16): on a CPU without them bf16 autocast works but brings no speed.
"""

from __future__ import annotations

import contextlib
import platform
from functools import lru_cache
from typing import Any

import torch

from achilles.errors import ConfigError

PRECISIONS = ("fp32", "bf16")
BF16_FLAGS = ("amx_bf16", "avx512_bf16")


def default_precision(profile: str, device: torch.device | str) -> str:
    """``bf16`` for the paper profile on a GPU with bf16 support, else ``fp32``."""
    device = torch.device(device)
    if profile == "paper" and device.type == "cuda" and torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bf16"
    return "fp32"


def check_precision(precision: str | None, device: torch.device | str) -> None:
    """Refuse, in one line, a precision the device cannot run (before any run folder is made)."""
    if precision is None or precision == "fp32":
        return
    if precision not in PRECISIONS:
        raise ConfigError("precision", f"{precision!r} is not one of {', '.join(PRECISIONS)}")
    device = torch.device(device)
    why = _bf16_unsupported(device.type)
    if why:
        raise ConfigError("precision", f"bf16 cannot run on {device} ({why}); use --precision fp32")


@lru_cache(maxsize=None)
def _bf16_unsupported(device_type: str) -> str | None:
    try:
        available = torch.amp.autocast_mode.is_autocast_available(device_type)
    except AttributeError:  # pragma: no cover - older torch
        available = device_type in ("cpu", "cuda")
    if not available:
        return f"torch has no autocast for {device_type!r} devices"
    if device_type == "cuda" and not torch.cuda.is_bf16_supported():
        return "this GPU does not support bfloat16"
    try:  # a tiny autocast op: the real test
        a = torch.ones(2, 2, device=device_type)
        with torch.autocast(device_type, dtype=torch.bfloat16):
            out = a @ a
        if out.dtype != torch.bfloat16:
            return f"autocast on {device_type!r} did not compute in bfloat16"
    except Exception as exc:  # noqa: BLE001 - any failure means: not usable here
        return f"{type(exc).__name__}: {exc}"
    return None


def autocast(precision: str | None, device: torch.device | str):
    """The context a forward runs in: bf16 autocast for ``bf16``, nothing for ``fp32``."""
    if precision != "bf16":
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)


@lru_cache(maxsize=1)
def cpu_description() -> dict[str, Any]:
    """This machine's CPU: ``model`` (the model string), ``bf16_units`` (the bf16 flags it has:
    amx_bf16, avx512_bf16) and ``has_bf16`` (any of them)."""
    model, flags = "", set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:  # the first processor's model name and flags (every core has the same)
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name" and not model:
                    model = value.strip()
                elif key == "flags" and not flags:
                    flags = set(value.split())
                if model and flags:
                    break
    except OSError:  # not Linux: the platform's processor string, flags unknown
        pass
    model = model or platform.processor() or platform.machine()
    units = [f for f in BF16_FLAGS if f in flags]
    return {"model": model or "unknown CPU", "bf16_units": units, "has_bf16": bool(units)}


def cpu_line() -> str:
    """One line for a benchmark table: the CPU model and its bf16 units."""
    cpu = cpu_description()
    units = ", ".join(cpu["bf16_units"]) if cpu["has_bf16"] else "none (bf16 brings no speed here)"
    return f"CPU: {cpu['model']}; bf16 units: {units}"
