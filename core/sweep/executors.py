"""Where a sweep's units train: in this process (serial), in a local process pool, or on Ray.

Each executor calls ``on_done(payload, results)`` as units finish and turns Ctrl-C (or SIGTERM
to the driver) into ``Interrupted`` after asking running units to stop at their next step, so
every cell keeps its last checkpoint."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import threading
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Callable

import torch

from achilles.training.threads import usable_cpus
from achilles.errors import AchillesError
from achilles.training.trainer import resolve_device
from achilles.sweep.worker import prepare_worker, statuses_on_disk, train_unit, unit_error

EXECUTORS = ("local", "ray")
OnDone = Callable[[list, list], None]
STOP_GRACE = 60  # seconds running units get, after Ctrl-C, to checkpoint and report


class Interrupted(Exception):
    """The sweep was stopped (Ctrl-C or SIGTERM); running units kept their checkpoints."""


def cpu_count() -> int:
    """The CPUs this process may use (its affinity, capped by a cgroup CPU quota)."""
    return usable_cpus()


def default_ensemble(device: str = "auto", executor: str = "local") -> bool:
    """Ensembles on a GPU, one-by-one on a CPU: the faster path as measured
    (benchmarks/RESULTS-sweep.md: on a CPU a step's cost per sample is flat from the papers'
    batch up, so members batched together save ~3% at best, and a sweep's ensembles load its
    workers unevenly: 0.59x cells/hour on the composite grid). A Ray sweep ensembles when this
    machine has a GPU."""
    try:
        return resolve_device(device).type == "cuda"
    except AchillesError:
        return False


def default_workers(device: str = "cpu") -> int:
    """On a CPU, one single-threaded worker per core: the papers' small models parallelise badly
    over intra-op threads (benchmarks/RESULTS-sweep.md: 2 processes x 1 thread train a 2-core
    sweep 2-3x faster than 1 process x 2 threads). On a GPU, one worker drives the device."""
    if device != "cpu" and resolve_device(device).type == "cuda":
        return 1
    return max(1, cpu_count())


def _raise_interrupt(*_):
    raise KeyboardInterrupt


def sigterm_as_interrupt():
    """A ``kill`` of the sweep driver stops it like Ctrl-C; returns the handler to restore (or None)."""
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, _raise_interrupt)


def execute_serial(payloads: list, env: dict, on_done: OnDone) -> None:
    """Every unit in this process, one after the other."""
    threads = torch.get_num_threads()
    try:
        for payload in payloads:
            try:
                results = train_unit(payload, env)
            except KeyboardInterrupt:  # outside the epoch loop (setup, card): count what the folders say
                on_done(payload, statuses_on_disk(payload))
                raise Interrupted() from None
            on_done(payload, results)
            if any(r["status"] == "interrupted" for r in results):  # Ctrl-C reached the trainer: no next unit
                raise Interrupted()
    except KeyboardInterrupt:
        raise Interrupted() from None
    finally:
        torch.set_num_threads(threads)


def execute_local(payloads: list, env: dict, workers: int, on_done: OnDone) -> None:
    """A pool of ``workers`` spawned processes (a fresh interpreter each: forking a process that
    already runs torch threads is unsafe). At most one unit per worker is handed to the pool at a
    time, so after Ctrl-C no unit waits in its queue to start."""
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn"),
                               initializer=prepare_worker, initargs=(env, True))
    queue = list(payloads)
    running: dict = {}
    try:
        while queue or running:
            while queue and len(running) < workers:
                payload = queue.pop(0)
                running[pool.submit(train_unit, payload, env)] = payload
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for fut in done:
                payload = running.pop(fut)
                on_done(payload, _unit_results(fut, payload))
    except KeyboardInterrupt:
        _stop_pool(pool, running, on_done)
        raise Interrupted() from None
    pool.shutdown(wait=True)


def _unit_results(fut, payload: list) -> list[dict]:
    try:
        return fut.result()
    except BrokenProcessPool as exc:
        return unit_error(payload, f"worker died ({exc})")
    except BaseException:  # stopped (SIGTERM raised KeyboardInterrupt in the worker)
        return statuses_on_disk(payload)


def _stop_pool(pool: ProcessPoolExecutor, running: dict, on_done: OnDone) -> None:
    """A clean stop: each worker finishes its step, marks its runs interrupted and reports; what
    did not report within STOP_GRACE is killed and counted from its run folders."""
    processes = list(getattr(pool, "_processes", {}).values())
    for proc in processes:
        try:
            os.kill(proc.pid, signal.SIGTERM)
        except (ProcessLookupError, OSError):
            pass
    try:
        done, not_done = wait(running, timeout=STOP_GRACE)
    except KeyboardInterrupt:  # a second Ctrl-C: stop waiting
        done, not_done = set(), set(running)
    if not_done:
        for proc in processes:
            if proc.is_alive():
                proc.kill()  # a unit that did not stop: nothing may outlive the sweep
    for fut in done:
        on_done(running[fut], _unit_results(fut, running[fut]))
    for fut in not_done:
        on_done(running[fut], statuses_on_disk(running[fut]))
    pool.shutdown(wait=not not_done, cancel_futures=True)


def require_ray():
    """The ray module, or a one-line error saying how to install it."""
    try:
        import ray  # optional: the ray extra
    except ImportError:
        raise AchillesError('the ray executor needs Ray: pip install "achilles[ray]"') from None
    return ray


def execute_ray(payloads: list, env: dict, address: str | None, on_done: OnDone) -> None:
    """One Ray task per unit, each reserving ``env["threads"]`` CPUs and ``env["gpus"]`` GPUs."""
    ray = require_ray()
    started_here = False
    if not ray.is_initialized():
        address = address or os.environ.get("RAY_ADDRESS")
        kwargs = dict(include_dashboard=False, log_to_driver=False,
                      runtime_env={"env_vars": dict(env.get("env", {}))})
        ray.init(address=address, **kwargs) if address else ray.init(**kwargs)
        started_here = True
    # Ray hides GPUs from tasks that reserve none: ask for a share of one with gpus_per_unit.
    remote = ray.remote(num_cpus=env["threads"], num_gpus=env.get("gpus", 0.0), max_retries=0)(train_unit)
    refs = {remote.remote(p, env): p for p in payloads}
    pending = list(refs)
    try:
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            for ref in ready:
                try:
                    results = ray.get(ref)
                except Exception as exc:  # the task's worker died (OOM, node lost)
                    results = unit_error(refs[ref], f"ray task failed ({exc})")
                on_done(refs[ref], results)
    except KeyboardInterrupt:
        for ref in pending:
            ray.cancel(ref)  # KeyboardInterrupt inside the task: the trainer keeps its checkpoint
        try:
            ready, _ = ray.wait(pending, num_returns=len(pending), timeout=STOP_GRACE)
        except Exception:
            ready = []
        for ref in pending:  # count what really finished: from the task, else from its run folders
            try:
                results = ray.get(ref, timeout=0) if ref in ready else statuses_on_disk(refs[ref])
            except Exception:
                results = statuses_on_disk(refs[ref])
            on_done(refs[ref], results)
        raise Interrupted() from None
    finally:
        if started_here:
            ray.shutdown()
