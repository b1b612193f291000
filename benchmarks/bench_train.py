"""Samples/second of a paper-profile training epoch, through the real trainer.

    python benchmarks/bench_train.py [--task inverse] [--archs mamba2,mamba2-residual,transformer]
                                     [--samples 80000] [--device auto]

Each row trains one epoch at the paper's settings for the task (batch 1024 and d_model 128
for inverse; batch 2048 and d_model 32 for composite; 2 layers) with data held on the
device, and reports the trainer's own measurement (evaluation excluded).
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time

import torch

sys.path.insert(0, ".")  # run from the repository root without installing anything else

from achilles.runs.folder import RunFolder  # noqa: E402
from achilles.cli.table import format_table  # noqa: E402
from achilles.training.trainer import start_run  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="inverse")
    parser.add_argument("--archs", default="mamba2,mamba2-residual,transformer")
    parser.add_argument("--samples", type=int, default=None, help="training samples (default: the paper's split)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if torch.device(args.device if args.device != "auto" else "cpu").type == "cpu" and not torch.cuda.is_available():
        from achilles.training.allocator import tune_cpu_allocator

        tune_cpu_allocator()  # as `achilles train` does on the CPU
    rows = []
    for arch in args.archs.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            trainer = start_run(arch, args.task, profile="paper", out=f"{tmp}/run", device=args.device,
                                model_config={"n_layers": 2}, epochs=1, train_samples=args.samples,
                                eval_samples=256, progress=False)
            started = time.perf_counter()
            trainer.fit()
            wall = time.perf_counter() - started
            record = RunFolder(f"{tmp}/run").read_metrics()[-1]
            rows.append((arch, args.task, trainer.device, trainer.settings.batch_size,
                         trainer.model.config.get("d_model"), int(record["samples_per_second"] * record["train_seconds"]),
                         f"{record['train_seconds']:.1f}", f"{record['samples_per_second']:.0f}", f"{wall:.1f}"))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}")
    print(format_table(rows, ["arch", "task", "device", "batch", "d_model", "samples", "epoch s",
                              "samples/s", "wall s (incl. eval)"]))


if __name__ == "__main__":
    main()
