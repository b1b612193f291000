"""Is `achilles train` fair on a shared CPU? Samples/s alone, beside a busy process, and two at once.

    python benchmarks/bench_fairness.py [--shapes composite,inverse] [--rounds 3]
                                        [--configs default,threads=1,threads=2] [--epochs 4]
                                        [--scenarios quiet,competitor,two] [--rt]

Each run is a real ``achilles train`` process (the command a user types; its samples/s are the
trainer's own per-epoch numbers, so start-up and evaluation are excluded) at a paper shape:

    composite  mamba2, d_model 32, 2 layers, length 8, batch 2048
    inverse    mamba2-residual, d_model 128, 2 layers, length 29, batch 1024

Scenarios, interleaved round by round so that a changing background load hits all of them alike:

    quiet        one training alone
    competitor   one training beside one CPU-bound process (a Python busy loop)
    two          two trainings started together; their samples/s summed

A run trains ``--epochs`` short epochs and counts the middle ones only (not the first, whose
start the two trainings of ``two`` may not share, nor the last, which one of them may train
alone). A config is a set of environment variables for the training processes:

    default      what `achilles train` does by itself: threads adapted to the other work
                 (achilles.training.threads.ThreadGovernor), idle threads spin briefly (GOMP_SPINCOUNT=1000)
    threads=N    ACHILLES_THREADS=N: N threads throughout
    +passive     OMP_WAIT_POLICY=PASSIVE: idle threads sleep at once
    +spin        GOMP_SPINCOUNT=300000: libgomp's own default (idle threads spin for milliseconds),
                 what `achilles train` did before it chose a wait policy

``--rt`` runs every process under ``chrt -f 1`` (SCHED_FIFO): on a machine shared with other work
they then take the CPUs ahead of it (the kernel still leaves others 5% of each second), which
stands in for a quiet machine. Use it with ``--scenarios quiet`` only: the busy loop and the
second training would be real-time too, and real-time threads do not share a CPU the way the
ordinary scheduler does.

The table shows best and median over rounds of samples/s, and of the ratios competitor / quiet
and two / quiet (each taken within a round). The targets (issue 14): competitor >= 40% of quiet
(a fair share of two cores is 50%), two >= 80% of quiet. The load column is ``os.getloadavg()``
(1 minute) at each round's start: the ratios are side by side, but other work on the machine
moves them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, ".")  # run from the repository root

from achilles.cli.table import format_table  # noqa: E402

SHAPES = {
    "composite": dict(arch="mamba2", task="composite", d_model=32, batch=2048, samples=24576),
    "inverse": dict(arch="mamba2-residual", task="inverse", d_model=128, batch=1024, samples=4096),
}
SCENARIOS = ("quiet", "competitor", "two")
BUSY_LOOP = "while True: pass"


def achilles_command() -> list[str]:
    script = Path(sys.executable).with_name("achilles")
    if script.is_file():
        return [str(script)]
    found = shutil.which("achilles")
    if not found:
        sys.exit("Error: the achilles command is not installed in this environment")
    return [found]


def config_env(name: str) -> dict[str, str]:
    """``default``, ``threads=N``, each optionally ``+spin``."""
    env = {}
    for part in name.split("+"):
        if part == "default":
            continue
        if part == "spin":
            env["GOMP_SPINCOUNT"] = "300000"
        elif part == "passive":
            env["OMP_WAIT_POLICY"] = "PASSIVE"
        elif part.startswith("threads="):
            env["ACHILLES_THREADS"] = part.split("=", 1)[1]
        else:
            sys.exit(f"Error: unknown config part {part!r} (default, threads=N, +passive, +spin)")
    return env


def start_training(shape: dict, folder: Path, epochs: int, env: dict[str, str],
                   rt: bool = False) -> tuple[subprocess.Popen, Path]:
    out = folder / f"run-{time.monotonic_ns()}"
    cmd = [*(["chrt", "-f", "1"] if rt else []), *achilles_command(), "train", "--arch", shape["arch"], "--task", shape["task"], "--profile", "paper",
           "--layers", "2", "--d-model", str(shape["d_model"]), "--batch-size", str(shape["batch"]),
           "--samples", str(shape["samples"]), "--eval-samples", "128", "--epochs", str(epochs),
           "--out", str(out), "--no-progress"]
    full_env = {k: v for k, v in os.environ.items() if k not in ("ACHILLES_THREADS", "GOMP_SPINCOUNT",
                                                                 "OMP_WAIT_POLICY", "OMP_NUM_THREADS")}
    proc = subprocess.Popen(cmd, env={**full_env, **env, "MPLBACKEND": "Agg"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    return proc, out


def samples_per_second(proc: subprocess.Popen, out: Path) -> float:
    _, err = proc.communicate()
    if proc.returncode != 0:
        sys.exit(f"Error: achilles train failed ({proc.returncode}): {err.strip()[-500:]}")
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    middle = records[1:-1] or records
    return statistics.mean(r["samples_per_second"] for r in middle)


def run_scenario(scenario: str, shape: dict, folder: Path, epochs: int, env: dict[str, str], rt: bool) -> float:
    busy = None
    if scenario == "competitor":
        busy = subprocess.Popen([*(["chrt", "-f", "1"] if rt else []), sys.executable, "-c", BUSY_LOOP])
    runs = []
    try:
        runs = [start_training(shape, folder, epochs, env, rt) for _ in range(2 if scenario == "two" else 1)]
        return sum(samples_per_second(proc, out) for proc, out in runs)
    finally:
        for proc in [busy] + [p for p, _ in runs]:
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", default="composite,inverse")
    parser.add_argument("--configs", default="default,threads=1,threads=2")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=4, help="epochs per run; the first and last are not counted")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--rt", action="store_true", help="run every process under chrt -f 1 (see above)")
    args = parser.parse_args()
    shapes = [s.strip() for s in args.shapes.split(",")]
    unknown = [s for s in shapes if s not in SHAPES]
    if unknown:
        parser.error(f"unknown shape(s) {unknown}; shapes: {', '.join(SHAPES)}")
    configs = {c.strip(): config_env(c.strip()) for c in args.configs.split(",")}
    scenarios = [s.strip() for s in args.scenarios.split(",")]
    if any(s not in SCENARIOS for s in scenarios) or "quiet" not in scenarios:
        parser.error(f"scenarios are some of {', '.join(SCENARIOS)}, quiet among them")
    values: dict[tuple, list[float]] = {}
    loads: dict[tuple, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for rnd in range(args.rounds):
            for shape_name in shapes:
                for config, env in configs.items():
                    load = os.getloadavg()[0]
                    for scenario in scenarios:
                        sps = run_scenario(scenario, SHAPES[shape_name], Path(tmp), args.epochs, env, args.rt)
                        values.setdefault((shape_name, config, scenario), []).append(sps)
                        print(f"round {rnd + 1} {shape_name} {config} {scenario}: {sps:.0f} samples/s "
                              f"(load {load:.1f})", file=sys.stderr, flush=True)
                    loads.setdefault((shape_name, config), []).append(load)
    rows = []
    for shape_name in shapes:
        for config in configs:
            quiet = values[(shape_name, config, "quiet")]
            cells = [shape_name, config]
            for scenario in scenarios:
                v = values[(shape_name, config, scenario)]
                cells.append(f"{max(v):.0f} / {statistics.median(v):.0f}")
            for scenario in [s for s in scenarios if s != "quiet"]:
                ratios = [a / q for a, q in zip(values[(shape_name, config, scenario)], quiet)]
                cells.append(f"{max(ratios):.0%} / {statistics.median(ratios):.0%}")
            cells.append(" ".join(f"{x:.1f}" for x in loads[(shape_name, config)]))
            rows.append(cells)
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; {args.rounds} interleaved rounds; "
          f"{args.epochs} epochs per run, middle ones counted; samples/s as best / median"
          + ("; every process under chrt -f 1" if args.rt else ""))
    names = {"quiet": "quiet", "competitor": "competitor", "two": "two (sum)"}
    print(format_table(rows, ["shape", "config", *(names[s] for s in scenarios),
                              *(f"{s}/quiet" for s in scenarios if s != "quiet"), "load per round"]))


if __name__ == "__main__":
    main()
