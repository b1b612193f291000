"""One driver per sweep folder: a second ``achilles sweep`` on it fails at once instead of racing.

An OS file lock (``filelock``): it dies with its process, so a killed driver leaves no stale lock."""

from __future__ import annotations

from pathlib import Path

from filelock import FileLock, Timeout

from achilles.errors import AchillesError

LOCK = ".sweep.lock"


class SweepBusyError(AchillesError):
    """Another process is running this sweep."""


class SweepLock:
    """``with SweepLock(folder): ...`` holds the sweep folder, or raises SweepBusyError."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self._lock = FileLock(self.folder / LOCK, timeout=0)

    def __enter__(self) -> "SweepLock":
        try:
            self._lock.acquire()
        except Timeout:
            raise SweepBusyError(f"sweep {self.folder} is being run by another process; wait for it to "
                                 "finish (or stop it), then run this again") from None
        return self

    def __exit__(self, *exc) -> None:
        self._lock.release()
