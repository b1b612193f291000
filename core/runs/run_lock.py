"""One writer per run folder: a second train, resume or probe on a busy folder fails at once and
names the process holding it (``RunLock``, through ``filelock``)."""

from __future__ import annotations

import json
import os
from pathlib import Path
import time
from typing import Any

from achilles.errors import AchillesError, CheckpointError
from achilles.runs.files import atomic_write_json
from achilles.runs.layout import LOCK_FILE, LOCK_OWNER


class RunFolderBusy(AchillesError):
    """Another achilles process (train, probe, push) is writing or reading the run folder."""


class RunLock:
    """The lock a process holds while it writes (or publishes) a run folder: train, probe and push
    take it, and another process's is refused at once, naming who holds it (``filelock``; the
    operating system frees it when its holder dies). Within one process the lock is shared: a
    library user may hold a Trainer and resume or load the same folder."""

    def __init__(self, path: str | Path, action: str, reading: bool = False):
        from filelock import FileLock

        self.path, self.action, self.reading = Path(path), action, reading
        # one FileLock per lock file in this process (a counter of its holders)
        self._lock = FileLock(os.path.realpath(self.path / LOCK_FILE), timeout=0, is_singleton=True)
        self._acquired = False

    @property
    def held(self) -> bool:
        return self._acquired

    def acquire(self) -> "RunLock":
        from filelock import Timeout

        if self._acquired:
            return self
        try:
            self._lock.acquire()
        except Timeout:
            raise RunFolderBusy(f"run folder {self.path} is in use by {self._holder()}; wait until it "
                                f"finishes (or stop it), then run the {self.action} again") from None
        except OSError as exc:
            if self.reading and not os.access(self.path, os.W_OK):
                return self  # nobody can write a folder we cannot lock: reading it is safe
            raise CheckpointError(f"cannot lock run folder {self.path} ({exc.strerror or exc}): "
                                  "it must be writable") from None
        self._acquired = True
        if self._lock.lock_counter == 1:
            try:
                atomic_write_json(self.path / LOCK_OWNER, {"pid": os.getpid(), "action": self.action,
                                                           "since": time.strftime("%Y-%m-%d %H:%M:%S")})
            except OSError:
                pass  # the owner note only improves the message of a refused second writer
        return self

    def release(self) -> None:
        if not self._acquired:
            return
        self._acquired = False
        if self._lock.lock_counter == 1:
            (self.path / LOCK_OWNER).unlink(missing_ok=True)
        self._lock.release()

    def _holder(self) -> str:
        try:
            owner = json.loads((self.path / LOCK_OWNER).read_text())
            return f"`achilles {owner['action']}` (pid {owner['pid']}, since {owner['since']})"
        except (OSError, ValueError, KeyError, TypeError):
            return "another achilles process"

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()
