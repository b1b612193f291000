#!/usr/bin/env bash
# One prepared command for a GPU machine: fused-kernel parity tests, the architecture, trainer,
# logits and sweep benchmarks on CUDA, and one paper-profile figure 9 run, each step under its own
# time limit so the whole fits in about ten minutes; every table and log lands in one folder.
#
#   benchmarks/gpu-check.sh --prepare [MAMBA_SRC CONV_SRC]   # beforehand, where the network is
#   benchmarks/gpu-check.sh                                  # on the GPU machine, repository root
#   benchmarks/gpu-check.sh --dry-run                        # the same steps on CPU, tiny sizes
#
# The GPU machine is assumed to have python3 with torch (CUDA), triton, einops, pytest, numpy,
# pluggy, safetensors, huggingface_hub, click, tqdm, matplotlib and pyyaml installed, and no
# network. From the repository it installs achilles itself (pip --no-deps --no-index -e .); the
# kernels come as sources in .gpu-vendor/ (git-ignored, carried with the working tree), which
# --prepare fills: mamba/ (state-spaces/mamba: its Mamba2 kernels are Triton, imported from
# source, nothing to build) and causal-conv1d/ (built here for this GPU only, ~2 minutes;
# without it the fused path uses the torch convolution). flash-attn is not built (hours):
# attention runs through PyTorch's SDPA. See benchmarks/README.md.
#
# Output: $OUT if set (the device tool's folder), else benchmarks/gpu-check-results/<time>/:
# summary.md (every step's status, time and tables) and logs.tar.gz (every step's full log;
# with --keep-logs also unpacked in logs/). Environment knobs: GPU_CHECK_BUDGET (seconds for
# all steps, default 570), GPU_CHECK_ONLY (comma-separated step names to run, default all),
# GPU_CHECK_VENDOR (default .gpu-vendor), PYTHON (default python3).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1

MODE=gpu
KEEP_LOGS=0
case "${1:-}" in
  --prepare) MODE=prepare ;;
  --dry-run) MODE=dry-run ;;
  --keep-logs) KEEP_LOGS=1 ;;
  "") ;;
  -h|--help) sed -n '2,23p' "$0"; exit 0 ;;
  *) echo "Error: unknown option $1 (--prepare, --dry-run, --keep-logs, --help)" >&2; exit 2 ;;
esac

PY=${PYTHON:-python3}
VENDOR=$(pwd)/${GPU_CHECK_VENDOR:-.gpu-vendor}
MAMBA_COMMIT=e9594ce   # state-spaces/mamba (mamba_ssm 2.3.2.post1): the version the glue was checked on
CONV_COMMIT=0d2252d    # Dao-AILab/causal-conv1d 1.6.1

# -- --prepare: vendor the kernels' sources (run where git can reach GitHub, or give checkouts) ---------
if [ "$MODE" = prepare ]; then
  mkdir -p "$VENDOR" || exit 1   # (.gitignore lists .gpu-vendor/: it travels only when carried)
  fetch() {  # fetch NAME URL COMMIT [LOCAL_CHECKOUT] SUBDIRS...
    local name=$1 url=$2 commit=$3 local_src=$4; shift 4
    local tmp; tmp=$(mktemp -d)
    if [ -n "$local_src" ]; then
      git -C "$local_src" archive "$commit" "$@" | tar -x -C "$tmp" || return 1
    else
      git clone -q "$url" "$tmp/clone" && git -C "$tmp/clone" archive "$commit" "$@" | tar -x -C "$tmp" \
        && rm -rf "$tmp/clone" || return 1
    fi
    rm -rf "${VENDOR:?}/$name" && mv "$tmp" "$VENDOR/$name" && echo "$name: $commit -> $VENDOR/$name"
  }
  fetch mamba https://github.com/state-spaces/mamba "$MAMBA_COMMIT" "${2:-}" mamba_ssm LICENSE || exit 1
  # only the Triton ops are used: the package's __init__ (model classes, transformers, Mamba1's
  # CUDA extension) is replaced by its version line
  grep '^__version__' "$VENDOR/mamba/mamba_ssm/__init__.py" > "$VENDOR/mamba/init.tmp" \
    && mv "$VENDOR/mamba/init.tmp" "$VENDOR/mamba/mamba_ssm/__init__.py" || exit 1
  fetch causal-conv1d https://github.com/Dao-AILab/causal-conv1d "$CONV_COMMIT" "${3:-}" causal_conv1d csrc LICENSE || exit 1
  du -sh "$VENDOR"
  echo "Carry ${VENDOR##*/} with the working tree (device tool: carry [\"${VENDOR##*/}\"]); run: bash benchmarks/gpu-check.sh"
  exit 0
fi

# -- where everything goes ----------------------------------------------------------------------------
DEST=${OUT:-benchmarks/gpu-check-results/$(date +%Y%m%d-%H%M%S)}
LOGS=$DEST/logs
WORK=$(mktemp -d)
mkdir -p "$LOGS" || exit 1
SUMMARY=$DEST/summary.md
BUDGET=${GPU_CHECK_BUDGET:-570}
START=$(date +%s)
export PYTHONUNBUFFERED=1 ACHILLES_PLUGINS=achilles MPLBACKEND=Agg HF_HUB_OFFLINE=1
export PYTHONPATH="$VENDOR/mamba:$VENDOR/causal-conv1d:$VENDOR/build${PYTHONPATH:+:$PYTHONPATH}"

if [ "$MODE" = dry-run ]; then
  DEVICE=cpu
  # the dry run checks the wiring, not the time: a loaded CPU gets four times each step's limit
  BUDGET=${GPU_CHECK_BUDGET:-600}
  LIMIT_SCALE=4
else
  DEVICE=cuda
fi

{
  echo "# gpu-check ($MODE), $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo
  echo "Commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet 2>/dev/null || echo ' (+ local changes)'); budget ${BUDGET}s; device $DEVICE."
  echo
  echo "| step | status | seconds | limit |"
  echo "| --- | --- | ---: | ---: |"
} > "$SUMMARY"
TABLES=$WORK/tables.md
: > "$TABLES"

# step NAME LIMIT CMD...: run CMD under `timeout` (SIGTERM, then SIGKILL 10 s later), stdout to
# NAME.out and stderr to NAME.err, one summary row; the step's stdout (the tables) goes into the
# summary too. A step gets at most what is left of the budget; with under 10 s left it is skipped.
step() {
  local name=$1 limit=$(( $2 * ${LIMIT_SCALE:-1} )); shift 2
  if [ -n "${GPU_CHECK_ONLY:-}" ] && [[ ",$GPU_CHECK_ONLY," != *",$name,"* ]]; then
    return 0
  fi
  local left=$((BUDGET - ($(date +%s) - START)))
  if [ "$left" -lt 10 ]; then
    echo "| $name | skipped: budget spent | 0 | $limit |" >> "$SUMMARY"
    return 0
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  echo "== $name (limit ${limit}s): $*" >&2
  local t0 rc status
  t0=$(date +%s)
  timeout -k 10 "$limit" "$@" > "$LOGS/$name.out" 2> "$LOGS/$name.err"
  rc=$?
  case $rc in
    0) status=ok ;;
    124|137) status="stopped at its limit" ;;
    *) status="failed (exit $rc)" ;;
  esac
  echo "| $name | $status | $(( $(date +%s) - t0 )) | $limit |" >> "$SUMMARY"
  {
    echo "## $name: $status"
    echo
    echo '```'
    echo "\$ $*"
    tail -n 80 "$LOGS/$name.out"
    [ "$rc" -ne 0 ] && { echo "--- stderr (last 20 lines) ---"; tail -n 20 "$LOGS/$name.err"; }
    echo '```'
    echo
  } >> "$TABLES"
  return 0
}

skip() {  # skip NAME WHY
  if [ -z "${GPU_CHECK_ONLY:-}" ] || [[ ",$GPU_CHECK_ONLY," == *",$1,"* ]]; then
    echo "| $1 | skipped: $2 | 0 | - |" >> "$SUMMARY"
  fi
}

# -- the steps, most important first (the budget cuts from the end) --------------------------------
step env 20 bash -c "uname -a; nproc; free -g | head -2; command -v nvidia-smi >/dev/null && nvidia-smi;
  $PY -c 'import sys, torch; print(sys.version); print(\"torch\", torch.__version__, \"cuda\", torch.version.cuda, torch.cuda.is_available())'"

if [ "$MODE" = dry-run ]; then
  step install 30 "$PY" -c "import achilles; print('achilles', achilles.__version__, 'importable (dry run: no install)')"
else
  step install 90 "$PY" -m pip install --no-deps --no-build-isolation --no-index -q -e .
fi

if [ "$MODE" = dry-run ]; then
  skip build-causal-conv1d "dry run (needs nvcc and a GPU)"
elif [ -d "$VENDOR/causal-conv1d/csrc" ]; then
  step build-causal-conv1d 180 "$PY" benchmarks/gpu_kernels.py build-conv "$VENDOR/causal-conv1d" "$VENDOR/build"
else
  skip build-causal-conv1d "no sources in $VENDOR/causal-conv1d (benchmarks/gpu-check.sh --prepare)"
fi

step kernels 60 "$PY" benchmarks/gpu_kernels.py report

# The parity tests compile every Triton kernel once per shape; mamba_ssm's deterministic mode
# holds each kernel to one config (no autotuning), which keeps this inside its limit.
step fused-parity-tests 180 env MAMBA_DETERMINISTIC=1 "$PY" -m pytest -m gpu -q -rs -p no:cacheprovider tests/ \
  --ignore=tests/test_precision.py
# bf16 autocast against fp32, outputs and gradients, on every architecture: the CPU cases and, on a
# GPU, the CUDA paths (fused kernels where installed; marked gpu) (issue 23)
step bf16-parity-tests 90 env MAMBA_DETERMINISTIC=1 "$PY" -m pytest -q -rs -p no:cacheprovider \
  tests/test_precision.py -k "match_fp32 or matches_fp32 or fast_path or modular_and_chunked"

if [ "$MODE" = dry-run ]; then
  step bench-archs 60 "$PY" benchmarks/bench_archs.py --device cpu --shapes tiny --archs mamba2,transformer \
    --rounds 1 --steps 1 --no-anchor --precision fp32,bf16
  step figure9-paper-run 60 "$PY" -m achilles.cli.main train --arch mamba2-residual --task inverse --profile paper \
    --device cpu --epochs 1 --train-samples 64 --eval-samples 32 --batch-size 32 --out "$WORK/fig9" --no-progress
  step bench-train-inverse 60 "$PY" benchmarks/bench_train.py --device cpu --task inverse --archs mamba2 --samples 64
  step bench-logits 60 "$PY" benchmarks/bench_logits.py --device cpu --tasks inverse --batch 4 --rounds 1 --steps 1 --no-memory
  step bench-sweep 90 "$PY" benchmarks/bench_sweep.py --device cpu --archs transformer --gammas 0.5 --depths 1 \
    --seeds 2 --epochs 1 --samples 64 --eval-samples 32 --batch-size 32 --members 2 --step-seconds 0.2
else
  # fp32 and bf16 rows interleaved, on the torch and the fused paths, with the bf16/fp32 ratios
  step bench-archs 120 "$PY" benchmarks/bench_archs.py --device cuda --archs mamba2,mamba2-residual,transformer \
    --rounds 3 --steps 5 --precision fp32,bf16
  # figure 9 (inverse sequence matching, appendix D's settings): as many epochs as fit, then
  # SIGTERM stops it cleanly at an epoch boundary, keeping its checkpoint and metrics; the paper
  # profile on a GPU trains in bf16 by default (issue 23), which its run.json records
  step figure9-paper-run 100 "$PY" -m achilles.cli.main train --arch mamba2-residual --task inverse --profile paper \
    --device cuda --out "$WORK/fig9" --no-progress
  step bench-train-inverse 45 "$PY" benchmarks/bench_train.py --device cuda --task inverse \
    --archs mamba2,mamba2-residual,transformer
  step bench-train-composite 45 "$PY" benchmarks/bench_train.py --device cuda --task composite \
    --archs mamba2,transformer --samples 65536
  step bench-logits 60 "$PY" benchmarks/bench_logits.py --device cuda --rounds 3
  step bench-sweep 90 "$PY" benchmarks/bench_sweep.py --device cuda --archs mamba2,transformer --depths 2 \
    --seeds 2 --epochs 2 --samples 16384 --repeats 1
fi

# figure 9's record: epochs done, seconds and samples/s per epoch, accuracies per split
if [ -f "$WORK/fig9/metrics.jsonl" ]; then
  cp "$WORK/fig9/metrics.jsonl" "$LOGS/figure9-metrics.jsonl"
  cp "$WORK/fig9/training_curves.png" "$LOGS/" 2>/dev/null
  step figure9-record 20 "$PY" -c "
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
print('epoch  train_s  samples/s  loss    ' + '  '.join(f'{s}_acc' for s in rows[-1]['metrics']))
for r in rows:
    print(f\"{r['epoch']:5d}  {r['train_seconds']:7.1f}  {r['samples_per_second']:9.0f}  {r['loss']:.4f}  \"
          + '  '.join(f\"{m.get('acc', float('nan')):.3f}\" for m in r['metrics'].values()))
per = sum(r['train_seconds'] for r in rows) / len(rows)
print(f'{len(rows)} epochs; {per:.1f} s of training per epoch: 200 epochs (the paper profile) take about {200 * per / 60:.0f} min plus evaluation')
" "$LOGS/figure9-metrics.jsonl"
fi

{
  echo
  echo "Total $(( $(date +%s) - START )) s."
  echo
  cat "$TABLES"
} >> "$SUMMARY"
tar -czf "$DEST/logs.tar.gz" -C "$DEST" logs
[ "$KEEP_LOGS" = 1 ] || rm -rf "$LOGS"   # the device tool brings back 8 files at most
rm -rf "$WORK"
echo "gpu-check: $SUMMARY" >&2
grep -E '^\| ' "$SUMMARY" >&2
