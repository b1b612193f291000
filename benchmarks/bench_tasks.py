"""Generation speed of every first-party task at its paper (default) dataset size.

    python benchmarks/bench_tasks.py                 # one CPU core, best of 3
    python benchmarks/bench_tasks.py --repeats 5 --cores 0 --large

Each row generates every split of a task at ``split_sizes()`` (the paper's sizes) with seed 0
and reports the fastest of ``--repeats`` runs (other work on the machine only ever slows a run
down). The two rows the issue asks about come first: 300,000 ``composite`` samples and
100,000 ``inverse`` samples. ``--cores 1`` (default) pins the process to one core and one
torch thread; ``--cores 0`` leaves it alone. ``--large`` adds the MQAR grid's largest corner
(length 512, 128 pairs), which is memory-bound (100,000 x 512 tokens).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

os.environ.setdefault("ACHILLES_PLUGINS", "achilles")

import numpy as np  # noqa: E402
import torch  # noqa: E402

import achilles  # noqa: E402

# (label, task, settings, {split: n} or None for the paper's split sizes)
CASES = [
    ("composite 300,000", "composite", {}, {"train": 300_000}),
    ("inverse 100,000 (L=2)", "inverse", {}, None),
    ("composite paper splits", "composite", {}, None),
    ("composite-symmetric", "composite-symmetric", {}, None),
    ("inverse (L=5)", "inverse", {"n_layers": 5}, None),
    ("mqar (64, 4)", "mqar", {}, None),
    ("mqar (256, 64)", "mqar", {"length": 256, "n_pairs": 64}, {"train": 20_000, "test": 3_000}),
    ("copy", "copy", {}, None),
    ("cot-lis", "cot-lis", {}, None),
    ("cot-ed", "cot-ed", {}, None),
]
LARGE = [("mqar (512, 128)", "mqar", {"length": 512, "n_pairs": 128}, None)]


def time_case(task_name: str, settings: dict, sizes: dict | None, repeats: int) -> tuple[int, float, int]:
    task = achilles.get_task(task_name, **settings)
    sizes = sizes or task.split_sizes()
    task.generate(next(iter(sizes)), 64)  # warm up imports and caches
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for split, n in sizes.items():
            task.generate(split, n, seed=0)
        best = min(best, time.perf_counter() - start)
    return sum(sizes.values()), best, task.seq_len


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cores", type=int, default=1, help="pin to this many cores (0: no pinning)")
    parser.add_argument("--large", action="store_true", help="add MQAR at length 512, 128 pairs")
    args = parser.parse_args(argv)
    if args.cores and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:args.cores])
        torch.set_num_threads(args.cores)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"# {platform.machine()} {platform.processor() or ''} | {cores} core(s) used of {os.cpu_count()} | "
          f"python {sys.version.split()[0]}, numpy {np.__version__}, torch {torch.__version__} | "
          f"best of {args.repeats}")
    header = f"{'case':<24} {'seq_len':>7} {'samples':>9} {'seconds':>8} {'samples/s':>11}"
    print(header)
    print("-" * len(header))
    for label, name, settings, sizes in CASES + (LARGE if args.large else []):
        n, seconds, seq_len = time_case(name, settings, sizes, args.repeats)
        print(f"{label:<24} {seq_len:>7} {n:>9,} {seconds:>8.3f} {n / seconds:>11,.0f}", flush=True)


if __name__ == "__main__":
    main()
