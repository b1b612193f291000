"""mamba_ssm's Triton kernels on CPU tensors, through Triton's interpreter (opt-in tests only).

Used by ``tests/test_archs_fused_interpret.py`` (marker ``triton_interpret``). What it needs,
none of it a project dependency (see benchmarks/README.md, "The fused path on CPU"):

* ``triton`` and ``einops`` in the environment (``pip install triton einops``, ~1 GB);
* the sources of mamba_ssm and causal-conv1d, never built: a checkout or an unpacked sdist of
  each, given by ``ACHILLES_MAMBA_SSM_SRC`` / ``ACHILLES_CAUSAL_CONV1D_SRC`` (the folders that
  contain ``mamba_ssm/`` and ``causal_conv1d/``), or installed packages found on the path.

The kernels' Python modules import without their packages' ``__init__`` (which loads the CUDA
extensions), with three shims: Triton's autotuner keeps only the first config of each kernel
(the interpreter would run them all), ``torch.cuda.device`` is a null context for CPU tensors,
and the conv kernel's compiled forward is replaced by causal-conv1d's own reference function
(``causal_conv1d_ref``; the conv kernel is CUDA C++, not Triton).
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import sys
import types
from pathlib import Path
from types import SimpleNamespace

import torch


class KernelsUnavailable(RuntimeError):
    pass


def _source_dir(package: str, env: str) -> Path:
    given = os.environ.get(env)
    if given:
        path = Path(given).expanduser() / package
        if not (path / "__init__.py").is_file():
            raise KernelsUnavailable(f"{env}={given} has no {package}/__init__.py")
        return path
    spec = importlib.util.find_spec(package)  # does not run the package's __init__
    if spec is None or not spec.submodule_search_locations:
        raise KernelsUnavailable(f"the {package} sources are missing: set {env} to a checkout "
                                 f"(the folder that contains {package}/)")
    return Path(list(spec.submodule_search_locations)[0])


def _stub_package(name: str, path: Path) -> None:
    """Make ``name`` importable as a namespace over ``path`` without running its __init__."""
    module = types.ModuleType(name)
    module.__path__ = [str(path)]
    sys.modules[name] = module


def cpu_aware_cuda_device(original):
    """``torch.cuda.device`` that is a null context for CPU tensors' (index None) devices."""
    def device(where):
        if where is None or (isinstance(where, torch.device) and where.type == "cpu"):
            return contextlib.nullcontext()
        return original(where)
    return device


def load() -> SimpleNamespace:
    """The kernels ``achilles.plugins.archs.fused`` looks up, runnable on CPU tensors.

    Sets ``TRITON_INTERPRET=1`` for this process (the kernels are decorated at import)."""
    if "triton_kernels_loaded" in sys.modules:
        return sys.modules["triton_kernels_loaded"].kernels  # type: ignore[attr-defined]
    if "mamba_ssm" in sys.modules or "triton" in sys.modules:
        raise KernelsUnavailable("triton or mamba_ssm was imported before the interpreter was switched on "
                                 "(e.g. by GPU tests in the same session): run "
                                 "pytest -m triton_interpret in a process of its own")
    os.environ["TRITON_INTERPRET"] = "1"  # before triton decorates anything
    try:
        import einops  # noqa: F401  (mamba_ssm imports it)
        import triton
    except ImportError as exc:
        raise KernelsUnavailable(f"{exc.name} is not installed (pip install triton einops)") from None
    mamba_src = _source_dir("mamba_ssm", "ACHILLES_MAMBA_SSM_SRC")
    conv_src = _source_dir("causal_conv1d", "ACHILLES_CAUSAL_CONV1D_SRC")

    # causal-conv1d: its reference function, loaded past the CUDA extension import
    _stub_package("causal_conv1d", conv_src)
    sys.modules["causal_conv1d.cpp_functions"] = types.SimpleNamespace(  # type: ignore[assignment]
        causal_conv1d_fwd_function=None, causal_conv1d_bwd_function=None, causal_conv1d_update_function=None)
    interface = importlib.import_module("causal_conv1d.causal_conv1d_interface")
    conv_ref = interface.causal_conv1d_ref

    def causal_conv1d_fn(x, weight, bias=None, seq_idx=None, initial_states=None, return_final_states=False,
                         final_states_out=None, activation=None):
        assert seq_idx is None and initial_states is None and not return_final_states
        return conv_ref(x, weight, bias, activation=activation)

    def causal_conv1d_fwd_function(x, weight, bias, seq_idx, initial_states, final_states_out, silu_activation):
        assert seq_idx is None and initial_states is None and final_states_out is None
        return conv_ref(x, weight, bias, activation="silu" if silu_activation else None)

    # mamba_ssm: the Triton modules only, each kernel held to its first autotune config
    _stub_package("mamba_ssm", mamba_src)
    autotune = triton.autotune
    triton.autotune = lambda configs, *args, **kwargs: autotune(configs[:1], *args, **kwargs)
    try:
        ssd = importlib.import_module("mamba_ssm.ops.triton.ssd_combined")
        norm = importlib.import_module("mamba_ssm.ops.triton.layernorm_gated")
    finally:
        triton.autotune = autotune
    ssd.causal_conv1d_fn = causal_conv1d_fn
    ssd.causal_conv1d_fwd_function = causal_conv1d_fwd_function
    kernels = SimpleNamespace(causal_conv1d_fn=causal_conv1d_fn, rmsnorm_fn=norm.rmsnorm_fn,
                              mamba_chunk_scan_combined=ssd.mamba_chunk_scan_combined,
                              mamba_split_conv1d_scan_combined=ssd.mamba_split_conv1d_scan_combined,
                              flash_attn_func=None)
    sys.modules["triton_kernels_loaded"] = types.SimpleNamespace(kernels=kernels)  # type: ignore[assignment]
    return kernels
