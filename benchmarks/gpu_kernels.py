"""The fused kernels on a machine that cannot download them: build and report (used by gpu-check.sh).

    python benchmarks/gpu_kernels.py build-conv SRC BUILD_DIR   # causal-conv1d's CUDA extension
    python benchmarks/gpu_kernels.py report                     # what achilles' fused path sees

``build-conv`` compiles causal-conv1d's extension (``causal_conv1d_cuda``) from its source tree
for this machine's GPU only (its setup.py builds for nine architectures, far too slow for a short
lease), into BUILD_DIR; put BUILD_DIR and SRC on PYTHONPATH afterwards. mamba-ssm needs no
build for achilles: its Mamba2 kernels are Triton, imported from the source tree on PYTHONPATH.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path


def build_conv(src: str, build_dir: str) -> int:
    import torch
    from torch.utils.cpp_extension import load

    if not torch.cuda.is_available():
        print("Error: no CUDA device: nothing to build for", file=sys.stderr)
        return 1
    major, minor = torch.cuda.get_device_capability()
    arch = f"{major}{minor}"
    csrc = Path(src) / "csrc"
    sources = [csrc / f for f in ("causal_conv1d.cpp", "causal_conv1d_fwd.cu", "causal_conv1d_bwd.cu",
                                  "causal_conv1d_update.cu")]
    missing = [str(s) for s in sources if not s.is_file()]
    if missing:
        print(f"Error: causal-conv1d sources missing: {', '.join(missing)}", file=sys.stderr)
        return 1
    Path(build_dir).mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("MAX_JOBS", str(os.cpu_count() or 4))
    flags = ["-O3", "-U__CUDA_NO_HALF_OPERATORS__", "-U__CUDA_NO_HALF_CONVERSIONS__",
             "-U__CUDA_NO_BFLOAT16_OPERATORS__", "-U__CUDA_NO_BFLOAT16_CONVERSIONS__",
             "-U__CUDA_NO_BFLOAT162_OPERATORS__", "-U__CUDA_NO_BFLOAT162_CONVERSIONS__",
             "--expt-relaxed-constexpr", "--expt-extended-lambda", "--use_fast_math", "-lineinfo",
             f"-gencode=arch=compute_{arch},code=sm_{arch}"]  # (setup.py's flags, one architecture)
    started = time.perf_counter()
    load(name="causal_conv1d_cuda", sources=[str(s) for s in sources], extra_cflags=["-O3"],
         extra_cuda_cflags=flags, extra_include_paths=[str(csrc)], build_directory=build_dir, verbose=True)
    print(f"built causal_conv1d_cuda for sm_{arch} in {time.perf_counter() - started:.0f}s into {build_dir}")
    return 0


def report() -> int:
    """One line per kernel package: imported or why not, and which fused paths that enables."""
    import torch

    os.environ.setdefault("ACHILLES_PLUGINS", "achilles")
    from achilles.plugins.archs import fused

    print(f"torch {torch.__version__}, CUDA available: {torch.cuda.is_available()}"
          + (f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""))
    for module in ("triton", "mamba_ssm", "causal_conv1d", "causal_conv1d_cuda", "flash_attn"):
        try:
            mod = __import__(module)
            print(f"  {module:<20} {getattr(mod, '__version__', 'imported')} ({getattr(mod, '__file__', '')})")
        except Exception as exc:
            print(f"  {module:<20} not importable: {type(exc).__name__}: {exc}")
    k = fused.kernels()
    if k is None:
        print(f"fused path: unavailable ({fused.unavailable_reason()})")
        return 1 if torch.cuda.is_available() else 0  # (expected on a CPU machine)
    print("fused path: mamba_ssm SSD + gated RMSNorm kernels; "
          + ("causal-conv1d kernel (one-call kernel for the plain block)" if k.causal_conv1d_fn
             else "no causal-conv1d: torch convolution, separate SSD kernels")
          + ("; flash-attn" if k.flash_attn_func else "; no flash-attn: attention through SDPA"))
    return 0


def main(argv: list[str]) -> int:
    if len(argv) == 3 and argv[0] == "build-conv":
        return build_conv(argv[1], argv[2])
    if argv == ["report"]:
        return report()
    print("usage: gpu_kernels.py build-conv SRC BUILD_DIR | gpu_kernels.py report", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
