"""CPU allocator tuning for training the papers' small models (never applied on import;
``achilles train`` applies it when it trains on the CPU).

Eager PyTorch on CPU allocates a fresh tensor for almost every op. glibc serves blocks above its
mmap threshold (at most 32 MB by default) with fresh ``mmap`` calls and returns them on free, so
every large activation pays page faults on first touch: at the inverse task's shape
(B 1024, S 29, d_model 128) the wide (N, S, 512) activations are 60 MB each, and this costs about
a third of a training step on a 2-core box. ``tune_cpu_allocator()`` raises the mmap and trim
thresholds so freed blocks are reused instead. It changes the whole process's allocator policy
(memory is kept instead of given back to the OS), so it is the caller's choice: a trainer or a
benchmark calls it once at start-up. It does nothing where glibc's ``mallopt`` is unavailable.
"""

from __future__ import annotations

import ctypes
import ctypes.util

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def tune_cpu_allocator(threshold_bytes: int = 1 << 30) -> bool:
    """Serve allocations up to ``threshold_bytes`` from the reusable heap; True if applied."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    value = ctypes.c_int(int(threshold_bytes))
    return bool(mallopt(_M_MMAP_THRESHOLD, value)) and bool(mallopt(_M_TRIM_THRESHOLD, value))
