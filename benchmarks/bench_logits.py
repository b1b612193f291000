"""Training steps with full logits against logits only at the scored positions (``logits_mask``).

    python benchmarks/bench_logits.py                        # mqar, copy, inverse; mamba2; CPU
    python benchmarks/bench_logits.py --tasks mqar --batch 256 --rounds 6
    python benchmarks/bench_logits.py --device cuda          # GPU: peak memory from the allocator

One step = forward + the task's loss + backward + gradient clipping (norm 1) + AdamW, on one
batch of the task's training split, with the model settings the trainer would use
(``build_task_and_model``: the task's model defaults, 2 layers). Two ways per task:

* ``full``:   ``task.loss(model(tokens), batch)``: every position unembedded (the old trainer);
* ``masked``: ``achilles.models.logits_mask.task_loss``: ``model(tokens, logits_mask=batch.mask)``, only the
  scored positions unembedded (what the trainer does now).

Speed: both ways of a task are timed in interleaved rounds in this process; each row reports its
fastest step ("best") and its median step as samples/s. Peak memory: each way runs a few steps
in a fresh child process, which reports how far the steps raised the process's peak resident
memory above its level after building the model and the batch (CPU: ``VmHWM`` after resetting it
through ``/proc/self/clear_refs``), or the CUDA allocator's peak above its pre-step level (GPU). The load average is printed before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

import torch

TASK_SETTINGS = {"inverse": {"n_layers": 2}}


def build(task_name: str, arch: str, batch_size: int, device: str):
    from achilles.training.trainer import build_task_and_model

    task, model, _, _ = build_task_and_model(arch, task_name, {"n_layers": 2}, TASK_SETTINGS.get(task_name, {}), 0)
    batch = task.generate("train", batch_size, seed=0).to(device)
    model = model.to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=1e-2)
    return task, model, batch, opt


def make_step(task, model, batch, opt, mode: str):
    from achilles.models.logits_mask import task_loss

    def step():
        loss = task_loss(task, model, batch) if mode == "masked" else task.loss(model(batch.tokens), batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
    return step


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def memory_child(task_name: str, arch: str, batch_size: int, mode: str, device: str) -> None:
    """Runs in a fresh process: print the step's peak memory above the pre-step level, in bytes."""
    task, model, batch, opt = build(task_name, arch, batch_size, device)
    step = make_step(task, model, batch, opt, mode)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        for _ in range(2):
            step()
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - base
    else:
        base = _reset_peak_rss()
        for _ in range(2):
            step()
        peak = _peak_rss() - base
    print(json.dumps({"peak_bytes": peak}))


def _proc_status_bytes(field: str) -> int:
    with open("/proc/self/status") as f:
        line = next(line for line in f if line.startswith(field + ":"))
    return int(line.split()[1]) * 1024  # kB


def _reset_peak_rss() -> int:
    """Reset the peak resident set size to the current one (Linux: clear_refs 5); return it."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return _proc_status_bytes("VmRSS")
    except OSError:  # no procfs: the peak since start-up, an overestimate of the base
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _peak_rss() -> int:
    try:
        return _proc_status_bytes("VmHWM")
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def peak_memory(task_name: str, arch: str, batch_size: int, mode: str, device: str, threads: int) -> float | None:
    cmd = [sys.executable, __file__, "--memory-child", f"{task_name},{arch},{batch_size},{mode},{device}",
           "--threads", str(threads)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        print(f"# memory child failed for {task_name}/{mode}: {done.stderr.strip().splitlines()[-1:]}")
        return None
    return json.loads(done.stdout.strip().splitlines()[-1])["peak_bytes"] / 2**20


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", default="mqar,copy,inverse")
    parser.add_argument("--arch", default="mamba2")
    parser.add_argument("--batch", type=int, default=None,
                        help="samples per step (default: the task's training batch size)")
    parser.add_argument("--rounds", type=int, default=4, help="interleaved rounds")
    parser.add_argument("--steps", type=int, default=2, help="timed steps per way per round")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory children")
    parser.add_argument("--memory-child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    os.environ.setdefault("ACHILLES_PLUGINS", "achilles")
    torch.set_num_threads(args.threads)
    if args.memory_child:
        task_name, arch, batch_size, mode, device = args.memory_child.split(",")
        memory_child(task_name, arch, int(batch_size), mode, device)
        return 0

    import achilles

    print(f"# achilles {achilles.__version__}, torch {torch.__version__}, python {platform.python_version()}, "
          f"{os.cpu_count()} cpus, threads {torch.get_num_threads()}, device {args.device}")
    print(f"# load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"# {args.rounds} interleaved rounds x {args.steps} timed steps per way; best = fastest step, "
          "median = median step; peak = step's peak memory above the pre-step level")
    header = (f"{'task':<8} {'arch':<10} {'batch':>5} {'S':>4} {'V':>5} {'way':<7} {'best samples/s':>14} "
              f"{'median':>8} {'speedup':>8} {'peak MB':>8} {'memory':>7}")
    print(header)
    for task_name in args.tasks.split(","):
        probe_task = achilles.get_task(task_name, **TASK_SETTINGS.get(task_name, {}))
        batch_size = args.batch or type(probe_task).training_defaults.get("batch_size", 1024)
        runs = {}
        for mode in ("full", "masked"):
            task, model, batch, opt = build(task_name, args.arch, batch_size, args.device)
            runs[mode] = {"step": make_step(task, model, batch, opt, mode), "times": []}
        for run in runs.values():
            run["step"]()  # warm-up
        for _ in range(args.rounds):
            for run in runs.values():
                for _ in range(args.steps):
                    _sync(args.device)
                    started = time.perf_counter()
                    run["step"]()
                    _sync(args.device)
                    run["times"].append(time.perf_counter() - started)
        peaks = {mode: None if args.no_memory else
                 peak_memory(task_name, args.arch, batch_size, mode, args.device, args.threads) for mode in runs}
        full_best = batch_size / min(runs["full"]["times"])
        for mode, run in runs.items():
            best = batch_size / min(run["times"])
            median = batch_size / statistics.median(run["times"])
            peak = peaks[mode]
            memory = "" if peak is None or not peaks["full"] else f"{peak / peaks['full']:.2f}x"
            print(f"{task_name:<8} {args.arch:<10} {batch_size:>5} {probe_task.seq_len:>4} {probe_task.vocab_size:>5} "
                  f"{mode:<7} {best:14.0f} {median:8.0f} {best / full_best:7.2f}x "
                  f"{'n/a' if peak is None else f'{peak:.0f}':>8} {memory:>7}", flush=True)
    print(f"# load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
