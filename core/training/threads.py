"""How many threads a CPU training uses, and how its idle threads wait.

Imports no torch: ``choose_wait_policy()`` must run before torch is first imported, because
torch's CPU build uses GNU OpenMP (libgomp), which reads its wait policy once, when it is loaded.

* **Wait policy.** By default libgomp's idle threads spin for 300,000 iterations (milliseconds)
  before sleeping. On a machine shared with other work a spinning thread burns the CPU that the
  partner it waits for, descheduled, needs: two threads beside other work trained 60x slower.
  Sleeping at once (``OMP_WAIT_POLICY=PASSIVE``) costs 10-30% on a quiet machine instead, where
  the next parallel region follows within microseconds and a sleeping thread must be woken.
  ``GOMP_SPINCOUNT=1000`` (tens of microseconds, libgomp's own count for oversubscribed
  machines) keeps the quiet speed and bounds the waste; the thread governor below removes the
  second thread when others need its core. Measured in ``benchmarks/RESULTS-train.md``. An
  ``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT`` already set is kept.
* **Threads.** ``ACHILLES_THREADS`` (or ``--threads``) fixes the number of torch threads. Without
  it, ``achilles train`` starts with every CPU this process may use (``usable_cpus()``: its CPU
  affinity, capped by a cgroup CPU quota, as in a container started with ``--cpus``) and, while
  it trains on a CPU, ``ThreadGovernor`` gives up the threads that other processes' work leaves
  no core for.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path

log = logging.getLogger("achilles.training")

ENV_THREADS = "ACHILLES_THREADS"
WAIT_POLICY_VARS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")


def affinity_cpus() -> int:
    """CPUs this process may be scheduled on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def cgroup_cpu_limit(root: str | Path = "/sys/fs/cgroup") -> float | None:
    """The CPU quota of this process's cgroup in CPUs (cgroup v2 ``cpu.max`` or v1
    ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``), or None when there is none."""
    root = Path(root)
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return quota / period if quota > 0 and period > 0 else None


def usable_cpus(root: str | Path = "/sys/fs/cgroup") -> int:
    """CPUs this process can actually use: its affinity, capped by a cgroup quota (rounded up:
    a quota of 1.5 CPUs still runs two threads part of the time)."""
    cpus = affinity_cpus()
    limit = cgroup_cpu_limit(root)
    if limit is not None:
        cpus = min(cpus, max(1, math.ceil(limit)))
    return max(1, cpus)


def parse_threads(value: str | int | None, source: str = ENV_THREADS) -> int | None:
    """A thread count from the CLI or the environment (None or "" or "auto": the default)."""
    from achilles.errors import ConfigError

    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "auto")):
        return None
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise ConfigError(source, f"must be a positive whole number or auto, got {value!r}") from None
    if n < 1:
        raise ConfigError(source, f"must be at least 1, got {n}")
    return n


def requested_threads() -> int | None:
    """``ACHILLES_THREADS`` as a number, or None when unset or ``auto``."""
    return parse_threads(os.environ.get(ENV_THREADS))


def default_threads() -> int:
    """The number of torch threads of a training: ``ACHILLES_THREADS``, else the usable CPUs."""
    return requested_threads() or usable_cpus()


SPIN_COUNT = "1000"  # iterations an idle OpenMP thread spins before it sleeps


def choose_wait_policy(environ: dict | None = None) -> bool:
    """Set ``GOMP_SPINCOUNT=1000`` unless the user chose a wait policy; True if set here.
    Only effective before torch (libgomp) is loaded; the sweep's worker processes inherit it."""
    environ = os.environ if environ is None else environ
    if any(var in environ for var in WAIT_POLICY_VARS):
        return False
    environ["GOMP_SPINCOUNT"] = SPIN_COUNT
    return True


def apply_threads(threads: int | None = None) -> int:
    """Set torch's intra-op threads to ``threads``; returns the number set. None: ``ACHILLES_THREADS``
    if set, else the usable CPUs, adapted during CPU training to what other processes leave
    free (``ThreadGovernor``)."""
    import torch

    global _adaptive
    n = threads or requested_threads()
    _adaptive = n is None
    n = n or usable_cpus()
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


# -- adapting to other work on the machine -----------------------------------------------------
_adaptive = False  # set by apply_threads(None): the CLI's default when no count was given


def stop_adapting() -> None:
    """End the load-following thread count of a CLI command (``apply_threads(None)``), so that a
    later Python-API run in the same process keeps its fixed threads and resumes bit-exactly."""
    global _adaptive
    _adaptive = False


def _busy_seconds(cpus: set[int]) -> float | None:
    """CPU seconds spent busy (not idle or waiting for I/O) on ``cpus`` since boot (/proc/stat)."""
    try:
        lines = Path("/proc/stat").read_text().splitlines()
    except OSError:
        return None
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    busy = 0
    for line in lines:
        name, *fields = line.split()
        if not name.startswith("cpu") or name == "cpu" or int(name[3:]) not in cpus:
            continue
        user, nice, system, idle, iowait, irq, softirq, steal = (int(x) for x in fields[:8])
        busy += user + nice + system + irq + softirq + steal  # steal: the hypervisor ran others
    return busy / tick


class ThreadGovernor:
    """Re-chooses the number of torch threads every ``interval`` seconds from what other processes
    use: threads = the usable CPUs minus the CPUs others kept busy (at least 1).

    Measured in ``benchmarks/RESULTS-train.md``: on 2 cores, 2 threads train ~1.8x faster than 1
    when the machine is quiet, but beside other work a parallel region waits for the thread that
    shares its core, and one thread that owns a core does better. Others' use is the busy time of
    this process's CPUs (``/proc/stat``) minus this process's own CPU time, smoothed over two
    intervals. Call ``tick()`` between steps, in the thread that trains (OpenMP's thread count is
    per calling thread)."""

    def __init__(self, max_threads: int, interval: float = 2.0):
        self.max_threads, self.interval = max_threads, interval
        try:
            self.cpus = set(os.sched_getaffinity(0))
        except AttributeError:  # pragma: no cover - not Linux
            self.cpus = set(range(os.cpu_count() or 1))
        self.others = 0.0
        self.threads = max_threads
        self.set(max_threads)
        self._mark = self._sample()

    @classmethod
    def for_training(cls, device_type: str) -> "ThreadGovernor | None":
        """A governor when the CLI left the thread count to achilles and training is on a CPU."""
        if not _adaptive or device_type != "cpu":
            return None
        cpus = usable_cpus()
        return cls(cpus) if cpus > 1 and _busy_seconds({0}) is not None else None

    def _sample(self) -> tuple[float, float, float | None]:
        import time

        return time.monotonic(), time.process_time(), _busy_seconds(self.cpus)

    def tick(self) -> None:
        import time

        if time.monotonic() - self._mark[0] < self.interval:
            return
        now = self._sample()
        (t0, own0, busy0), (t1, own1, busy1) = self._mark, now
        self._mark = now
        if busy0 is None or busy1 is None or t1 <= t0:
            return
        others = max(0.0, (busy1 - busy0) - (own1 - own0)) / (t1 - t0)
        self.others = 0.5 * (self.others + others)
        threads = self.choose(self.others)
        if threads != self.threads:
            log.debug(f"threads: {threads} (other processes keep {self.others:.1f} of {len(self.cpus)} CPUs busy)")
            self.set(threads)
            self.threads = threads

    def choose(self, others: float) -> int:
        """Threads for a machine where other processes keep ``others`` CPUs busy."""
        return max(1, min(self.max_threads, math.floor(self.max_threads - others + 0.5)))

    @staticmethod
    def set(threads: int) -> None:
        import torch

        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
