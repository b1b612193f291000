"""Limits before allocation: settings that cannot fit in memory are refused up front, with the
estimated size, instead of after minutes of growth (or a crash of the whole machine).

Every estimate here is a lower bound (what must be held at once, nothing speculative), so a
refusal is certain and a run that fits is never refused. The model is measured by building it
on PyTorch's ``meta`` device, which allocates nothing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import torch

from achilles.errors import AchillesError

#: bytes per sequence position of a generated batch: int64 tokens and targets, a bool mask
BYTES_PER_POSITION = 8 + 8 + 1
#: bytes per parameter while training: fp32 weights, gradients and AdamW's two moments
BYTES_PER_TRAINED_PARAMETER = 4 * 4
_LAYERS_BUILT_WHOLE = 16
EVAL_DATA = "evaluation data"  # deeper models are measured at 1 and 2 layers and extrapolated


class TooLargeError(AchillesError):
    """Settings whose memory need exceeds what the machine has."""


@dataclass
class MemoryEstimate:
    """Named parts (``label -> (bytes, the flag that sets it)``) of a memory need."""

    parts: dict[str, tuple[int, str]] = field(default_factory=dict)

    def add(self, label: str, size: int, flag: str) -> None:
        self.parts[label] = (int(size), flag)

    @property
    def total(self) -> int:
        return sum(size for size, _ in self.parts.values())

    def check(self, available: int | None, where: str = "this machine") -> None:
        """Refuse when the total exceeds ``available`` bytes (None: unknown, nothing refused)."""
        if available is None or self.total <= available:
            return
        # the settings to lower: those of every part too large on its own, else of the largest part
        culprits = [k for k, (size, _) in self.parts.items() if size > available]
        culprits = culprits or [max(self.parts, key=lambda k: self.parts[k][0])]
        flags = list(dict.fromkeys(f for k in culprits for f in self.parts[k][1].split(", ")))
        shown = "; ".join(f"{label} {human_bytes(size)}" for label, (size, _) in self.parts.items() if size)
        raise TooLargeError(f"these settings need at least {human_bytes(self.total)} of memory ({shown}) but "
                            f"{where} has {human_bytes(available)} available; lower {', '.join(flags)}")


def human_bytes(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if size < 1024 or unit == "PiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} PiB"  # pragma: no cover


def available_memory(device: torch.device | str = "cpu") -> int | None:
    """Bytes that can still be allocated on ``device`` (host memory: MemAvailable plus free swap)."""
    device = torch.device(device)
    if device.type == "cuda":
        try:
            return int(torch.cuda.mem_get_info(device)[0])
        except (RuntimeError, AssertionError):
            return None
    try:
        with open("/proc/meminfo") as f:
            info = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in f if line.strip()}
        return info["MemAvailable"] + info.get("SwapFree", 0)
    except (OSError, KeyError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def data_bytes(samples: int, seq_len: int) -> int:
    return int(samples) * int(seq_len) * BYTES_PER_POSITION


def parameter_count(arch: str, settings: dict[str, Any]) -> int | None:
    """Parameters of ``arch`` with ``settings``, counted on the meta device (nothing allocated).
    None when the factory cannot build on meta (or refuses the settings: it says so itself later)."""
    from achilles.contract.lookup import create_architecture

    def count(config: dict[str, Any]) -> int:
        with torch.device("meta"):
            model = create_architecture(arch, **config)
        return sum(p.numel() for p in model.parameters())

    try:
        layers = settings.get("n_layers")
        if isinstance(layers, int) and not isinstance(layers, bool) and layers > _LAYERS_BUILT_WHOLE:
            one, two = count({**settings, "n_layers": 1}), count({**settings, "n_layers": 2})
            return one + (layers - 1) * (two - one)
        return count(settings)
    except Exception:  # the real build reports the problem in its own words
        return None


def has_attention(arch: str) -> bool:
    """Whether ``arch`` computes softmax attention, whose scores grow with length²: the registered
    component's ``attention`` hint (``register(name, factory, attention=True)``), else its family
    tag ``transformer``."""
    from achilles.contract.lookup import registry
    from achilles.contract.declarations import arch_tags

    try:
        hint = registry("architecture").get(str(arch)).extra.get("attention")
    except AchillesError:
        return False
    return bool(hint) if hint is not None else "transformer" in arch_tags(arch)


def _built_config(arch: str, settings: dict[str, Any]) -> dict[str, Any]:
    """The full config of ``arch`` with ``settings`` (defaults filled in), built on the meta device
    at one layer (nothing allocated); empty when it cannot be built."""
    from achilles.contract.lookup import create_architecture

    try:
        with torch.device("meta"):
            return dict(getattr(create_architecture(arch, **{**settings, "n_layers": 1}), "config", {}) or {})
    except Exception:  # the real build reports the problem in its own words
        return {}


def attention_bytes(batch: int, heads: int, seq_len: int, layers: int) -> int:
    """Attention scores held while training on a CPU: the softmax probabilities of every layer,
    kept for the backward pass, and one layer's scores being computed (batch x heads x length² fp32
    each; measured: a 2-layer Transformer at length 4,000 holds 4.4 such tensors)."""
    return (int(layers) + 1) * int(batch) * int(heads) * int(seq_len) ** 2 * 4


def training_estimate(arch: str, model_settings: dict[str, Any], task, train_samples: int | None,
                      eval_samples: int | None, batch_size: int, device: torch.device | str = "cpu") -> MemoryEstimate:
    """The least memory one training run holds at once: its training and evaluation data, the
    model with gradients and optimizer state, one batch of activations per layer, and on a CPU an
    architecture with attention its length² scores (a GPU's fused attention does not hold them)."""
    sizes = task.split_sizes()
    seq_len = task.seq_len
    n_train = train_samples if train_samples is not None else sizes.get("train", 0)
    estimate = MemoryEstimate()
    estimate.add(f"training data ({n_train:,} samples x {seq_len:,} positions)", data_bytes(n_train, seq_len),
                 "--train-samples")
    n_eval = sum((eval_samples if eval_samples is not None else size)
                 for split, size in sizes.items() if split != "train")
    estimate.add(EVAL_DATA, data_bytes(n_eval, seq_len), "--eval-samples")
    params = parameter_count(arch, model_settings)
    if params is not None:
        estimate.add(f"model and optimizer ({params:,} parameters)", params * BYTES_PER_TRAINED_PARAMETER,
                     "--layers, --d-model")
        d_model, layers = model_settings.get("d_model"), model_settings.get("n_layers")
        if all(isinstance(v, int) and not isinstance(v, bool) for v in (d_model, layers)):
            batch = min(batch_size, max(1, n_train))
            estimate.add("activations", batch * seq_len * d_model * layers * 4, "--batch-size, --layers, --d-model")
    if torch.device(device).type != "cuda" and has_attention(arch):
        config = {**_built_config(arch, model_settings), **model_settings}
        heads, layers = config.get("n_heads", 1), config.get("n_layers")
        if all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in (heads, layers)):
            batch = min(batch_size, max(1, n_train))
            estimate.add(f"attention scores ({batch} x {heads} head(s) x {seq_len:,}² positions, {layers} layer(s))",
                         attention_bytes(batch, heads, seq_len, layers), "the task's sequence length, --batch-size")
    return estimate


def check_training_fits(arch: str, model_settings: dict[str, Any], task, train_samples: int | None,
                        eval_samples: int | None, batch_size: int, device: torch.device | str = "cpu") -> None:
    """Refuse a run that cannot fit before any of it is allocated."""
    estimate = training_estimate(arch, model_settings, task, train_samples, eval_samples, batch_size, device)
    device = torch.device(device)
    if device.type == "cuda":  # evaluation data stays on the host; the rest lives on the GPU
        host = MemoryEstimate({k: v for k, v in estimate.parts.items() if k == EVAL_DATA})
        host.check(available_memory("cpu"))
        gpu = MemoryEstimate({k: v for k, v in estimate.parts.items() if k != EVAL_DATA})
        gpu.check(available_memory(device), where=str(device))
    else:
        estimate.check(available_memory("cpu"))


def check_samples_fit(samples: int, seq_len: int, flag: str) -> None:
    """Refuse generating ``samples`` sequences of ``seq_len`` that cannot fit in host memory."""
    estimate = MemoryEstimate()
    estimate.add(f"{samples:,} samples x {seq_len:,} positions", data_bytes(samples, seq_len), flag)
    estimate.check(available_memory("cpu"))


# -- a model config from a checkpoint (config.json of a run folder, a Hub repo, a zoo entry) -----
#: settings named in a refusal, when the config has them (the ones that size a model)
_SIZE_SETTINGS = ("d_model", "n_layers", "vocab_size", "max_len", "d_state", "d_ff", "n_heads", "expand", "headdim")


@dataclass
class ModelMeasure:
    """A model measured on the meta device: parameters, bytes of its tensors, state_dict entries."""

    parameters: int
    bytes: int
    tensors: int
    extrapolated: bool = False  # measured at 1 and 2 layers (a deep model)


def measure_model(arch: str, settings: dict[str, Any]) -> ModelMeasure | None:
    """``arch`` with ``settings`` measured on the meta device (nothing allocated); models deeper
    than 16 layers are measured at 1 and 2 layers and extrapolated. None when the factory cannot
    build on meta (or refuses the settings)."""
    from achilles.contract.lookup import create_architecture

    def measure(config: dict[str, Any]) -> ModelMeasure:
        with torch.device("meta"):
            model = create_architecture(arch, **config)
        tensors = list(model.parameters()) + list(model.buffers())
        return ModelMeasure(sum(p.numel() for p in model.parameters()),
                            sum(t.numel() * t.element_size() for t in tensors), len(model.state_dict()))

    try:
        layers = settings.get("n_layers")
        if isinstance(layers, int) and not isinstance(layers, bool) and layers > _LAYERS_BUILT_WHOLE:
            one, two = measure({**settings, "n_layers": 1}), measure({**settings, "n_layers": 2})
            return ModelMeasure(*(a + (layers - 1) * (b - a) for a, b in
                                  ((one.parameters, two.parameters), (one.bytes, two.bytes),
                                   (one.tensors, two.tensors))), extrapolated=True)
        return measure(settings)
    except Exception:  # the real build reports the problem in its own words
        return None


def check_model_config(arch: str, settings: dict[str, Any], *, what: str, device: torch.device | str = "cpu",
                       tensors_in_file: int | None = None) -> ModelMeasure | None:
    """The one check of a checkpoint's model config before anything is built, called by every
    loader (``achilles.load``, ``eval``, ``probe``, ``from_pretrained``, ``create_architecture(...,
    pretrained=True)``): the model is measured on the meta device as ``train`` measures it
    (``parameter_count``); a config whose model needs more memory than ``device`` has, or (with
    ``tensors_in_file``, read from the weights file's header) a deep model holding another number
    of tensors than the file (built whole on meta, a shallow one is compared tensor by tensor by the
    loader), is refused, naming its size settings."""
    measured = measure_model(arch, settings)
    if measured is None:
        return None
    sizes = ", ".join(f"{k}={settings[k]:,}" if isinstance(settings[k], int) else f"{k}={settings[k]!r}"
                      for k in _SIZE_SETTINGS if k in settings) or "its settings"
    if tensors_in_file is not None and measured.extrapolated and measured.tensors != tensors_in_file:
        from achilles.errors import CheckpointError

        raise CheckpointError(f"{what}: its config.json builds a {arch!r} model of {measured.tensors:,} tensors "
                              f"({sizes}) but its weights file holds {tensors_in_file:,}; refusing to build it")
    estimate = MemoryEstimate()
    estimate.add(f"model ({measured.parameters:,} parameters)", measured.bytes, f"config.json's {sizes}")
    estimate.add("its weights read from the file", measured.bytes, f"config.json's {sizes}")
    device = torch.device(device)
    try:
        estimate.check(available_memory(device), where=str(device) if device.type == "cuda" else "this machine")
    except TooLargeError as exc:
        raise TooLargeError(f"{what}: refusing to build the {arch!r} model its config.json asks for: {exc}") from None
    return measured
