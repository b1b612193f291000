"""Training throughput of every architecture at the Achilles' Heel paper's shapes.

    python benchmarks/bench_archs.py                      # CPU, all archs, both shapes, HF anchor
    python benchmarks/bench_archs.py --archs mamba2,transformer --shapes inverse --rounds 6
    python benchmarks/bench_archs.py --device cuda        # GPU: torch path vs fused kernels
    python benchmarks/bench_archs.py --archs transformer,transformer-rope,transformer-nope --no-anchor
                                                          # the positional schemes (learned, rotary, none)
    python benchmarks/bench_archs.py --archs mamba2,mamba1,deltanet,deltanet-noconv,lstm --no-anchor
                                                          # the atlas mixers (issue 20: target within 2x of mamba2)
    python benchmarks/bench_archs.py --precision fp32,bf16 --no-anchor
                                                          # bf16 autocast against fp32, rows interleaved

One step = forward + loss + backward + gradient clipping (max norm 1) + AdamW, as in the paper's
training setup (appendix D: AdamW, clip 1, cross-entropy on the last position only). As the
trainer does, our models unembed only the scored (last) position (``logits_mask``); the anchor
has no such argument and unembeds all positions. ``--full-logits`` unembeds every position for
every model (the step as measured before ``logits_mask`` existed). Shapes:

* composite: batch 2048, length 8,  d_model 32,  2 layers
* inverse:   batch 1024, length 29, d_model 128, 2 layers

(vocabulary 256 for both). The anchor a CPU user would otherwise pick is Hugging Face
``transformers``' ``Mamba2ForCausalLM`` with the same sizes (state 128, expand 2, one head of
size 2*d_model, conv 4, chunk size = sequence length: its fastest setting here), timed side by
side in the same process; install it with ``pip install -e '.[bench]'``. Without it the ratio
column says so. ``--malloc tuned`` applies ``achilles.training.allocator.tune_cpu_allocator``
for everything in the run (anchor included).

All models of a shape are timed in interleaved rounds (anchor, then each architecture, repeated)
and each row reports its fastest step ("best") and its median step. On a shared machine, bursts
of other load slow whichever model happens to be running; the fastest step is the least
disturbed estimate and is taken under the same conditions for every row, so the "best" ratios
are the ones to compare. The package itself never imports transformers. "all" (the default) is
every registered architecture, the positional variants ``transformer-rope`` and
``transformer-nope`` included; the last column compares each to ``transformer`` and to ``mamba2``
(issue 20 asks every new architecture for at least 0.5x of mamba2's steps/s on a CPU). ``mamba1``
is timed twice on a CPU: backend ``torch`` (its compiled scan, the default for work this size)
and ``torch-eager`` (the same weights on its eager scan, ``force_path = "scan"``).

``--precision fp32,bf16`` times every model in both precisions in the same interleaved rounds
(fp32 and bf16 rows side by side; bf16 rows add their ratio to the same model in fp32). bf16 is
the trainer's: the forward and the loss under ``torch.autocast(device, dtype=torch.bfloat16)``,
the loss cast to fp32 for backward, fp32 weights and AdamW state. Every table starts with the
CPU model string and its bf16 units (amx_bf16 / avx512_bf16 in /proc/cpuinfo): on a CPU without
them bf16 autocast runs but brings no speed, and the header says so.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
import warnings

import torch
import torch.nn.functional as F

SHAPES = {
    "composite": dict(batch=2048, seq_len=8, d_model=32, n_layers=2),
    "inverse": dict(batch=1024, seq_len=29, d_model=128, n_layers=2),
    "tiny": dict(batch=8, seq_len=8, d_model=16, n_layers=2),  # smoke checks of this script only
}
VOCAB = 256


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


class Runner:
    """One model's training step on one fixed random batch: forward + loss on the last position
    + backward + clip + AdamW; ``run(k)`` times k steps and keeps the per-step times."""

    def __init__(self, label: str, backend: str, model: torch.nn.Module, shape: dict, device: str, call=None,
                 last_only: bool = False, precision: str = "fp32"):
        self.label, self.backend, self.device, self.precision = label, backend, device, precision
        self.model = model.to(device).train()
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=1e-4, betas=(0.9, 0.999), eps=1e-8,
                                     weight_decay=1e-2)
        gen = torch.Generator().manual_seed(0)
        self.tokens = torch.randint(0, VOCAB, (shape["batch"], shape["seq_len"]), generator=gen).to(device)
        self.targets = torch.randint(0, VOCAB, (shape["batch"],), generator=gen).to(device)
        self.call = call or (lambda m, x: m(x))
        self.last_only = last_only
        self.mask = torch.zeros(self.tokens.shape, dtype=torch.bool, device=device)
        self.mask[:, -1] = True
        self.times: list[float] = []

    def step(self) -> None:
        with torch.autocast(self.device, dtype=torch.bfloat16, enabled=self.precision == "bf16"):
            if self.last_only:  # (N, V): the last position's logits only
                logits = self.model(self.tokens, logits_mask=self.mask)
            else:
                logits = self.call(self.model, self.tokens)[:, -1]
            loss = F.cross_entropy(logits, self.targets)
        loss.float().backward()  # as the trainer: an fp32 loss, fp32 weights and AdamW state
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)

    def run(self, steps: int) -> None:
        self.step()  # warm-up (allocator, caches, kernels)
        _sync(self.device)
        for _ in range(steps):
            start = time.perf_counter()
            self.step()
            _sync(self.device)
            self.times.append(time.perf_counter() - start)

    def best(self) -> float:
        """Steps per second of the fastest step (robust to other load on the machine)."""
        return 1.0 / min(self.times)

    def median(self) -> float:
        return 1.0 / statistics.median(self.times)


def hf_anchor(shape: dict):
    """transformers' Mamba2ForCausalLM at the same sizes, or None if transformers is missing."""
    try:
        import transformers
        from transformers import Mamba2Config, Mamba2ForCausalLM
    except Exception:
        return None
    transformers.logging.set_verbosity_error()
    d = shape["d_model"]
    config = Mamba2Config(vocab_size=VOCAB, hidden_size=d, state_size=128, expand=2, num_heads=1,
                          head_dim=2 * d, n_groups=1, conv_kernel=4, chunk_size=shape["seq_len"],
                          num_hidden_layers=shape["n_layers"], use_cache=False)
    torch.manual_seed(0)
    return Mamba2ForCausalLM(config)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--archs", default="all", help="comma-separated names, or 'all'")
    parser.add_argument("--shapes", default="composite,inverse")
    parser.add_argument("--rounds", type=int, default=4, help="interleaved rounds over all models")
    parser.add_argument("--steps", type=int, default=2, help="timed steps per model per round")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (CPU)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--malloc", default="default", choices=["default", "tuned"])
    parser.add_argument("--no-anchor", action="store_true")
    parser.add_argument("--full-logits", action="store_true",
                        help="unembed every position (default: only the scored last one, as the trainer)")
    parser.add_argument("--precision", default="fp32",
                        help="fp32, bf16, or fp32,bf16: both, rows interleaved, with the bf16/fp32 ratio")
    args = parser.parse_args(argv)
    precisions = args.precision.split(",")
    if not precisions or any(p not in ("fp32", "bf16") for p in precisions):
        parser.error(f"--precision: choose fp32, bf16 or fp32,bf16 (got {args.precision!r})")

    os.environ.setdefault("ACHILLES_PLUGINS", "achilles")
    import achilles
    from achilles.training.allocator import tune_cpu_allocator
    from achilles.models.logits_mask import accepts_logits_mask
    from achilles.training.precision import check_precision, cpu_description, cpu_line

    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)
    archs = achilles.list_architectures() if args.archs == "all" else args.archs.split(",")
    backends = ["torch", "fused"] if args.device == "cuda" else ["torch"]
    malloc = f"tuned ({tune_cpu_allocator()})" if args.malloc == "tuned" else "glibc defaults"
    print(f"# achilles {achilles.__version__}, torch {torch.__version__}, python {platform.python_version()}, "
          f"{platform.machine()}, {os.cpu_count()} cpus, threads {torch.get_num_threads()}, device {args.device}"
          + (f" ({torch.cuda.get_device_name()})" if args.device == "cuda" else "") + f", malloc {malloc}")
    print(f"# {cpu_line()}")
    if args.device == "cuda":
        print(f"# GPU bf16 support: {torch.cuda.is_bf16_supported()}")
    if "bf16" in precisions:
        check_precision("bf16", args.device)  # one line where autocast cannot run bf16
        if args.device == "cpu" and not cpu_description()["has_bf16"]:
            print("# this CPU has no bf16 units (amx_bf16 / avx512_bf16): bf16 autocast runs, but brings no "
                  "speed here (the bf16 rows measure the conversion overhead)")
    try:
        print(f"# load average before: {os.getloadavg()[0]:.2f}")
    except OSError:
        pass
    print(f"# {args.rounds} interleaved rounds x {args.steps} timed steps per model; "
          "best = fastest step, median = median step; "
          + ("every position unembedded" if args.full_logits else "our models unembed the last position only"))
    print(f"{'arch':<20} {'shape':<10} {'backend':<13} {'prec':<5} {'best steps/s':>12} {'median':>8} "
          f"{'ms/step':>8}   vs HF anchor (best / median)   vs transformer (best / median)")
    for shape_name in args.shapes.split(","):
        shape = SHAPES[shape_name]
        runners = []
        anchor_note = "anchor skipped" if args.no_anchor else ""
        if not args.no_anchor:
            model = hf_anchor(shape)
            if model is None:
                anchor_note = "n/a: transformers not installed (pip install -e '.[bench]')"
            else:
                for i, precision in enumerate(precisions):
                    runners.append(Runner("hf-mamba2 (anchor)", "transformers", model if i == 0 else hf_anchor(shape),
                                          shape, args.device, call=lambda m, x: m(input_ids=x).logits,
                                          precision=precision))
        for arch in archs:
            for backend in backends:
                for precision in precisions:  # each precision its own model and optimizer, same weights
                    torch.manual_seed(0)
                    try:
                        model = achilles.create_model(arch, vocab_size=VOCAB, d_model=shape["d_model"],
                                                      n_layers=shape["n_layers"], max_len=shape["seq_len"],
                                                      backend=backend)
                    except achilles.AchillesError as exc:  # e.g. fused kernels not installed
                        print(f"{arch:<20} {shape_name:<10} {backend:<13} {precision:<5} n/a: {exc}")
                        break
                    runners.append(Runner(arch, backend, model, shape, args.device, precision=precision,
                                          last_only=not args.full_logits and accepts_logits_mask(model)))
                    if arch == "mamba1" and backend == "torch":  # its eager scan beside the compiled one
                        torch.manual_seed(0)
                        eager = achilles.create_model(arch, vocab_size=VOCAB, d_model=shape["d_model"],
                                                      n_layers=shape["n_layers"], max_len=shape["seq_len"],
                                                      backend=backend)
                        for layer in eager.layers:
                            layer.force_path = "scan"
                        runners.append(Runner(arch, "torch-eager", eager, shape, args.device, precision=precision,
                                              last_only=not args.full_logits and accepts_logits_mask(eager)))
        for runner in list(runners):  # a model that cannot train here is reported, not fatal
            try:
                runner.step()
            except Exception as exc:
                print(f"{runner.label:<20} {shape_name:<10} {runner.backend:<13} {runner.precision:<5} "
                      f"n/a: {type(exc).__name__}: {exc}")
                runners.remove(runner)
        for _ in range(args.rounds):  # interleaved, so a burst of other load hits every model alike
            for runner in runners:
                runner.run(args.steps)
        # each row against the anchor, transformer and torch path of its own precision
        anchors = {r.precision: r for r in runners if r.backend == "transformers"}
        tfs = {r.precision: r for r in runners if r.label == "transformer" and r.backend == "torch"}
        fp32_rows = {(r.label, r.backend): r for r in runners if r.precision == "fp32"}
        for r in runners:
            anchor, tf = anchors.get(r.precision), tfs.get(r.precision)
            torch_path = {q.label: q for q in runners if q.backend == "torch" and q.precision == r.precision}
            if anchor is not None:
                vs_anchor = f"{r.best() / anchor.best():6.2f}x / {r.median() / anchor.median():6.2f}x"
            else:
                vs_anchor = anchor_note
            vs_tf = f"{r.best() / tf.best():.2f} / {r.median() / tf.median():.2f}" if tf is not None else ""
            m2 = torch_path.get("mamba2")
            if m2 is not None and r is not m2 and r.backend != "transformers":  # issue 20: within 2x of mamba2
                vs_tf += f"  (vs mamba2 {r.best() / m2.best():.2f}x / {r.median() / m2.median():.2f}x)"
            if r.backend == "fused" and r.label in torch_path:
                vs_tf += f"  (fused/torch {r.best() / torch_path[r.label].best():.2f}x)"
            base = fp32_rows.get((r.label, r.backend))
            if r.precision == "bf16" and base is not None:
                vs_tf += f"  (bf16/fp32 {r.best() / base.best():.2f}x / {r.median() / base.median():.2f}x)"
            print(f"{r.label:<20} {shape_name:<10} {r.backend:<13} {r.precision:<5} {r.best():12.3f} {r.median():8.3f} "
                  f"{1000 / r.best():8.1f}   {vs_anchor:<29}  {vs_tf}", flush=True)
    try:
        print(f"# load average after: {os.getloadavg()[0]:.2f}")
    except OSError:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
