"""Record training throughput for `achilles reproduce --list` estimates, from finished runs.

Reads every run folder under the given run stores (e.g. ``examples/reports/runs``), takes the
median samples/s over each run's epochs (metrics.jsonl records it per epoch), groups runs by
(architecture, task, depth, width, sequence length), and writes the median of each group into
``core/recipes/throughput.json`` under a device kind (``cpu`` or ``cuda``), with the machine and
how the runs were trained; on a CPU into the table of this CPU's model string (``by_model``), with
the bf16 units it has, and each entry's precision (what the runs' run.json record; absent: fp32).
Nothing is estimated here: every entry is a measurement.

    python benchmarks/recipe_throughput.py examples/reports/runs --kind cpu \\
        --how "1 thread per run, 2 runs at once (achilles reproduce --workers 2)"
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
from pathlib import Path

from achilles.contract.lookup import get_task
from achilles.training.precision import cpu_description, cpu_line
from achilles.recipes.cost import THROUGHPUT_FILE
from achilles.runs.folder import RunFolder


def machine() -> str:
    import os

    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count()
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{platform.machine()} {model}, {cores} cores".strip()


def collect(stores: list[Path]) -> dict[tuple, list[float]]:
    groups: dict[tuple, list[float]] = {}
    for store in stores:
        for config_file in sorted(store.glob("*/*/config.json")):
            run = RunFolder(config_file.parent)
            try:
                config = run.read_config()
            except Exception:
                continue
            if config.get("status") != "finished":
                continue
            rates = [r["samples_per_second"] for r in run.read_metrics() if r.get("samples_per_second")]
            if not rates:
                continue
            model = config.get("model") or {}
            seq_len = get_task(config["task"], **(config.get("task_config") or {})).seq_len
            precision = (config.get("training") or {}).get("precision") or "fp32"
            key = (config["arch"], config["task"], int(model.get("n_layers", 2)), int(model.get("d_model", 32)),
                   int(seq_len), precision)
            groups.setdefault(key, []).append(statistics.median(rates))
    return groups


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stores", nargs="+", type=Path, help="run stores (folders of sweep folders)")
    parser.add_argument("--kind", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--how", required=True, help="how the runs were trained (threads, runs at once)")
    parser.add_argument("--out", type=Path, default=THROUGHPUT_FILE)
    args = parser.parse_args()
    groups = collect(args.stores)
    table = json.loads(args.out.read_text()) if args.out.is_file() else {}
    cpu = cpu_description()
    measured = {
        "machine": machine(), "cpu_model": cpu["model"], "bf16_units": cpu["bf16_units"], "how": args.how,
        "entries": [{"arch": a, "task": t, "n_layers": l, "d_model": d, "seq_len": s, "runs": len(v),
                     "samples_per_s": round(statistics.median(v), 1), **({"precision": p} if p != "fp32" else {})}
                    for (a, t, l, d, s, p), v in sorted(groups.items())]}
    if args.kind == "cpu":  # one table per CPU model string; the first one measured stays the fallback
        section = table.get("cpu") or {}
        by_model = dict(section.get("by_model") or {})
        by_model[cpu["model"]] = measured
        table["cpu"] = {**section, "fallback": section.get("fallback") or cpu["model"], "by_model": by_model}
    else:
        table[args.kind] = measured
    args.out.write_text(json.dumps(table, indent=2) + "\n")
    print(f"{'arch':<18} {'task':<20} {'layers':>6} {'width':>5} {'length':>6} {'runs':>4} {'samples/s':>10} precision")
    for e in measured["entries"]:
        print(f"{e['arch']:<18} {e['task']:<20} {e['n_layers']:>6} {e['d_model']:>5} {e['seq_len']:>6} "
              f"{e['runs']:>4} {e['samples_per_s']:>10.1f} {e.get('precision', 'fp32')}")
    print(cpu_line())
    print(f"\nWrote {args.out} ({args.kind}: {machine()})")


if __name__ == "__main__":
    main()
