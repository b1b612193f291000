"""Cells/hour of a phase-diagram sweep of small models: one-by-one versus ensembled, and why.

    python benchmarks/bench_sweep.py [--archs mamba2] [--task composite] [--device auto] [--modes ...]
                                     [--repeats 1] [--samples 80000] [--epochs 6] [--batch-size N]
                                     [--gammas 0.5,0.75,1.0] [--depths 2,3,4] [--seeds 3]
                                     [--step-cost-only | --no-step-cost]

Two tables.

**Step cost** (``--members 9``): the CPU time of one optimizer step per member and sample, one
thread, at the task's paper batch (composite: 2048), through the real steppers of the epoch loop
(``achilles.training.epoch_loop.LoopStepper``, ``achilles.training.ensemble.VmapStepper``) on real trainers:

    one model, batch/8   one run's step on a batch 8 times smaller (the fixed cost of a step)
    one model            one run's step
    one model, M x batch one model on a batch M times larger: what any "members as a batch
                         dimension" formulation computes at best (the same arithmetic per sample,
                         with per-member weights on top)
    ensemble loop        M members stepped in turn in one process
    ensemble vmap        M members in one vmapped forward and backward

CPU time (``time.process_time``) is what the step costs a core; it moves little when other
processes share the machine, unlike wall time, which is shown too.

**Sweep** (the default grid, issue 14): gamma {0.5, 0.75, 1.0} x n_layers {2, 3, 4} x 3 seeds =
27 cells, d_model 32, the quick profile (80,000 training samples x 6 epochs at batch 2048, 2,000
evaluation samples per split). Each mode is a whole ``run_sweep`` into a fresh folder, so the
time is what a user waits for (workers, data, evaluation, checkpoints, figures and cards):

    one-by-one   SweepOptions(ensemble=False): today's CPU default, one single-threaded worker per CPU
    ensembled    SweepOptions(ensemble=True): cells differing only in seed and gamma as one
                 ensemble (method auto: the faster of vmap and loop on one timed step)
    auto         SweepOptions(ensemble=None): what `achilles sweep` picks on this device

Modes run interleaved, ``--repeats`` times; best and median wall time. The load column is
``os.getloadavg()`` (1 minute) at each run's start.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, ".")  # run from the repository root

from achilles.training.allocator import tune_cpu_allocator  # noqa: E402
from achilles.training.ensemble import VmapStepper  # noqa: E402
from achilles.training.epoch_loop import LoopStepper  # noqa: E402
from achilles.sweep import SweepOptions, cpu_count, make_spec, run_sweep  # noqa: E402
from achilles.cli.table import format_table  # noqa: E402
from achilles.training.trainer import resolve_device, start_run  # noqa: E402

MODES = {"one-by-one": dict(ensemble=False), "ensembled": dict(ensemble=True), "auto": dict(ensemble=None)}


def step_cost(arch: str, task: str, d_model: int, layers: int, members: int, seconds: float,
              device: str, batch_size: int | None) -> list[list]:
    """Rows of the step-cost table (see the module docstring)."""
    torch.set_num_threads(1)
    cuda = device.startswith("cuda")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        made = iter(range(10**6))

        def trainers(n: int, batch: int | None = None):
            return [start_run(arch, task, profile="paper", seed=s, out=f"{tmp}/run{next(made)}", device=device,
                              model_config={"d_model": d_model, "n_layers": layers, "gamma": 0.5 + 0.25 * (s % 3)},
                              batch_size=batch, progress=False) for s in range(n)]

        one = trainers(1, batch_size)
        batch = one[0].settings.batch_size
        data = one[0].task.generate("train", batch * members, seed=0).to(one[0].device)
        cases = [(f"one model, batch {batch // 8}", LoopStepper(one), [data[:batch // 8]]),
                 ("one model", LoopStepper(one), [data[:batch]]),
                 (f"one model, {members} x batch", LoopStepper(one), [data]),
                 (f"ensemble loop, {members} members", LoopStepper(trainers(members, batch)),
                  [data[m * batch:(m + 1) * batch] for m in range(members)])]
        vmap_members = trainers(members, batch)
        cases.append((f"ensemble vmap, {members} members", VmapStepper(vmap_members),
                      [data[m * batch:(m + 1) * batch] for m in range(members)]))
        for name, stepper, batches in cases:
            alive = [True] * len(batches)
            samples = sum(len(b) for b in batches)
            stepper.step(batches, 1e-4, alive)  # warm-up
            walls, cpu0, n, started = [], time.process_time(), 0, time.perf_counter()
            while time.perf_counter() - started < seconds or n < 2:
                t0 = time.perf_counter()
                stepper.step(batches, 1e-4, alive)
                if cuda:
                    torch.cuda.synchronize()
                walls.append(time.perf_counter() - t0)
                n += 1
            cpu = (time.process_time() - cpu0) / n
            rows.append([arch, name, samples, n, f"{1e6 * cpu / samples:.1f}", f"{1e6 * min(walls) / samples:.1f}",
                         f"{1e6 * statistics.median(walls) / samples:.1f}", f"{os.getloadavg()[0]:.1f}"])
    return rows


def sweep_rows(args, arch: str) -> list[list]:
    results: dict[str, list[tuple[float, float, int, str]]] = {}
    for rep in range(args.repeats):
        for name in args.modes.split(","):
            with tempfile.TemporaryDirectory() as tmp:
                load = os.getloadavg()[0]
                started = time.perf_counter()
                spec = make_spec(arch, args.task, [f"gamma={args.gammas}", f"n_layers={args.depths}"],
                                 args.seeds, "quick", args.device, {"d_model": args.d_model},
                                 epochs=args.epochs, train_samples=args.samples, eval_samples=args.eval_samples,
                                 batch_size=args.batch_size)
                result = run_sweep(spec, SweepOptions(folder=Path(tmp) / "sweep", device=args.device,
                                                      progress=False, **MODES[name]))
                wall = time.perf_counter() - started
                assert not result.errors, result.errors
                results.setdefault(name, []).append((wall, load, result.trained, _methods(result)))
                print(f"{arch} {name} (repeat {rep + 1}): {wall:.0f}s, {result.trained} cells, {_methods(result)}, "
                      f"load {load:.1f}", file=sys.stderr, flush=True)
    base = statistics.median(w for w, *_ in results[next(iter(results))])
    rows = []
    for name, runs in results.items():
        walls = [w for w, *_ in runs]
        cells = runs[0][2]
        rows.append([arch, name, runs[0][3], cells, f"{min(walls):.0f} / {statistics.median(walls):.0f}",
                     f"{cells * 3600 / min(walls):.0f} / {cells * 3600 / statistics.median(walls):.0f}",
                     f"{base / statistics.median(walls):.2f}x", " ".join(f"{l:.1f}" for _, l, *_ in runs)])
    return rows


def _methods(result) -> str:
    """How the cells trained: one per cell, or ensembles (method, largest unit)."""
    from achilles.runs.folder import RunFolder

    firsts = [RunFolder(result.path / r["run"]).read_metrics()[:1] for r in result.rows]
    sizes = {rec[0].get("ensemble", 1) for rec in firsts if rec}
    if sizes <= {1}:
        return "one per cell"
    methods = sorted({rec[0].get("ensemble_method", "?") for rec in firsts if rec and rec[0].get("ensemble")})
    return f"{'/'.join(methods)}, up to {max(sizes)} per unit"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--archs", default="mamba2", help="comma-separated")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--task", default="composite")
    parser.add_argument("--d-model", type=int, default=32)
    parser.add_argument("--gammas", default="0.5,0.75,1.0")
    parser.add_argument("--depths", default="2,3,4")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--samples", type=int, default=80_000, help="training samples per cell (quick: 80,000)")
    parser.add_argument("--epochs", type=int, default=6, help="epochs per cell (quick: 6)")
    parser.add_argument("--eval-samples", type=int, default=None, help="per split (quick: 2,000)")
    parser.add_argument("--batch-size", type=int, default=None, help="(default: the task's paper batch)")
    parser.add_argument("--modes", default="one-by-one,ensembled", help=f"comma-separated: {', '.join(MODES)}")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--members", type=int, default=9, help="ensemble size of the step-cost table")
    parser.add_argument("--step-seconds", type=float, default=6.0, help="time per step-cost row")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--step-cost-only", action="store_true")
    group.add_argument("--no-step-cost", action="store_true")
    args = parser.parse_args()
    unknown = [m for m in args.modes.split(",") if m not in MODES]
    if unknown:
        parser.error(f"unknown mode(s) {unknown}; modes: {', '.join(MODES)}")
    args.device = str(resolve_device(args.device))
    if args.device == "cpu":
        tune_cpu_allocator()  # as `achilles train` and the sweep's workers do on a CPU
    archs = [a.strip() for a in args.archs.split(",")]
    print(f"torch {torch.__version__}, device {args.device}, {cpu_count()} usable CPUs, "
          f"{platform.processor() or platform.machine()}; {args.task}, d_model {args.d_model}")
    if not args.no_step_cost:
        rows = [row for arch in archs for row in step_cost(arch, args.task, args.d_model, 2, args.members,
                                                            args.step_seconds, args.device, args.batch_size)]
        print("\nStep cost, one thread, 2 layers (microseconds per member and sample):")
        print(format_table(rows, ["arch", "step", "samples", "steps", "CPU us", "wall us best", "wall us median",
                                  "load"]))
    if not args.step_cost_only:
        torch.set_num_threads(max(1, cpu_count()))
        rows = [row for arch in archs for row in sweep_rows(args, arch)]
        print(f"\nSweep: gamma {args.gammas} x n_layers {args.depths} x {args.seeds} seeds, quick profile, "
              f"{args.samples} samples x {args.epochs} epochs; wall s and cells/hour as best / median of "
              f"{args.repeats}")
        print(format_table(rows, ["arch", "mode", "how cells trained", "cells", "wall s", "cells/hour",
                                  "vs first mode (median)", "load per run"]))


if __name__ == "__main__":
    main()
