"""Cells/hour of a small sweep: one-by-one versus ensembled, through the real `run_sweep`.

    python benchmarks/bench_sweep.py [--archs mamba2,transformer] [--task composite]
                                     [--cells 4] [--epochs 4] [--samples 16384] [--batch-size 256]
                                     [--repeats 2] [--device auto] [--modes ...]

Each arch trains the same grid: gamma in {0.5, 1.0} x seeds (``--cells`` cells in all), d_model 32,
2 layers, quick profile with the sizes above. Every mode is a whole ``run_sweep`` into a fresh
folder, so the times include what a user waits for: worker start-up, data generation, per-epoch
evaluation and checkpoints, the figures and card of every cell. Modes:

    one-by-one Pp x Tt   --no-ensemble, P worker processes with T torch threads each
    ensembled  Pp x Tt   --ensemble (method auto: vmap where the arch's forward batches, else loop)

The best of ``--repeats`` runs is reported (the box may be shared; the load column is the 1-minute
load average when the best run started); steps/cell is the number of optimizer steps per cell.
The numbers go into benchmarks/RESULTS-sweep.md by hand.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, ".")  # run from the repository root

from achilles.sweep import SweepOptions, cpu_count, make_spec, run_sweep  # noqa: E402
from achilles.table import format_table  # noqa: E402


def modes(cores: int) -> dict[str, dict]:
    """name -> run_sweep options. ``1p x 1t``: one worker process with one torch thread (the
    ensemble's own effect, at equal resources); ``Np x 1t``: the CPU default (one single-threaded
    worker per core); ``1p x Nt``: one worker using every core through intra-op threads."""
    out = {"one-by-one 1p x 1t": dict(ensemble=False, workers=1, threads=1),
           "ensembled 1p x 1t": dict(ensemble=True, workers=1, threads=1),
           "ensembled-loop 1p x 1t": dict(ensemble=True, workers=1, threads=1, ensemble_method="loop")}
    if cores > 1:
        out.update({f"one-by-one {cores}p x 1t": dict(ensemble=False, workers=cores, threads=1),
                    f"ensembled {cores}p x 1t": dict(ensemble=True, workers=cores, threads=1),
                    f"one-by-one 1p x {cores}t": dict(ensemble=False, workers=1, threads=cores),
                    f"ensembled 1p x {cores}t": dict(ensemble=True, workers=1, threads=cores)})
    return out


DEFAULT_MODES = ("one-by-one 1p x 1t", "ensembled 1p x 1t", "ensembled-loop 1p x 1t", "one-by-one {c}p x 1t",
                 "ensembled {c}p x 1t")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--archs", default="mamba2,transformer")
    parser.add_argument("--task", default="composite")
    parser.add_argument("--cells", type=int, default=4, help="gamma {0.5, 1.0} x cells/2 seeds")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--samples", type=int, default=16384)
    parser.add_argument("--eval-samples", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--d-model", type=int, default=32)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--modes", default=None, help="comma-separated subset of the mode names")
    args = parser.parse_args()

    cores = cpu_count()
    chosen = modes(cores)
    if not args.modes:  # the 1p x Nt modes are slow on a shared box; ask for them with --modes
        chosen = {k: v for k, v in chosen.items() if k in [m.format(c=cores) for m in DEFAULT_MODES]}
    if args.device != "cpu" and torch.cuda.is_available():  # one GPU: one process drives it
        chosen = {"one-by-one 1p x 1t": dict(ensemble=False, workers=1, threads=1),
                  "ensembled 1p x 1t": dict(ensemble=True, workers=1, threads=1)}
    if args.modes:
        wanted = [m.strip() for m in args.modes.split(",")]
        unknown = [m for m in wanted if m not in chosen]
        if unknown:
            parser.error(f"unknown mode(s) {unknown}; modes: {', '.join(chosen)}")
        chosen = {k: v for k, v in chosen.items() if k in wanted}
    seeds = max(1, args.cells // 2)
    steps = args.epochs * -(-args.samples // args.batch_size)
    rows = []
    for arch in args.archs.split(","):
        base = None
        for rep in range(args.repeats):
            for name, mode in chosen.items():
                with tempfile.TemporaryDirectory() as tmp:
                    load = os.getloadavg()[0]
                    started = time.perf_counter()
                    # Ctrl-C raises SweepInterrupted, which stops the benchmark
                    spec = make_spec(arch, args.task, {"gamma": [0.5, 1.0]}, seeds, "quick", args.device,
                                     {"d_model": args.d_model, "n_layers": args.layers}, epochs=args.epochs,
                                     train_samples=args.samples, eval_samples=args.eval_samples,
                                     batch_size=args.batch_size)
                    result = run_sweep(spec, SweepOptions(folder=Path(tmp) / "sweep", device=args.device,
                                                          progress=False, **mode))
                    wall = time.perf_counter() - started
                    assert not result.errors, result.errors
                    method, train = _method_and_train_seconds(result)
                key = (arch, name)
                best = next((r for r in rows if r[0] == key), None)
                if best is None:
                    rows.append([key, wall, method, load, result.trained, train])
                elif wall < best[1]:
                    best[1:] = [wall, method, load, result.trained, train]
                print(f"{arch} {name}: {wall:.1f}s, training {train:.1f}s ({method}, load {load:.1f})",
                      file=sys.stderr, flush=True)
    table = []
    for (arch, name), wall, method, load, trained, train in rows:
        one = next((r[1] for r in rows if r[0] == (arch, "one-by-one 1p x 1t")), wall)
        table.append([arch, name, method, trained, steps, f"{wall:.1f}", f"{train:.1f}",
                      f"{trained * 3600 / wall:.0f}", f"{one / wall:.2f}x", f"{load:.1f}"])
    device = "cuda" if (args.device != "cpu" and torch.cuda.is_available()) else "cpu"
    print(f"torch {torch.__version__}, {cores} cores, device {device}, "
          f"{platform.processor() or platform.machine()}; task {args.task}, d_model {args.d_model}, "
          f"{args.layers} layers, batch {args.batch_size}, {args.samples} samples x {args.epochs} epochs, "
          f"best of {args.repeats}")
    print(format_table(table, ["arch", "mode", "method", "cells", "steps/cell", "wall s", "train s", "cells/hour",
                               "vs one-by-one 1p x 1t", "load"]))


def _method_and_train_seconds(result) -> tuple[str, float]:
    """How the cells trained, and the seconds spent in training steps (evaluation, checkpoints and
    set-up excluded; an ensemble's epoch counts once, not once per member)."""
    from achilles.runs import RunFolder

    records = [RunFolder(result.path / r["run"]).read_metrics() for r in result.rows]
    train = sum(e["train_seconds"] / e.get("ensemble", 1) for rec in records for e in rec)
    firsts = [rec[0] for rec in records if rec]
    sizes = {r.get("ensemble", 1) for r in firsts}
    if sizes == {1}:
        return "one per cell", train
    methods = sorted({r.get("ensemble_method", "?") for r in firsts})
    return f"{'/'.join(methods)}, {max(sizes)} per unit", train


if __name__ == "__main__":
    main()
