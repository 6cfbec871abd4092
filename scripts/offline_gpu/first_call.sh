#!/usr/bin/env bash
# The first of two calls on a lent GPU whose upload limit (64 MiB a call on ours) splits the SmolLM2 GGUF in two:
# this call carries `.whl` and `.offline/gguf-a` (+ smollm2-shape), the second `.offline/gguf-b`. Both halves
# stay on the machine between calls only while it is held, so the second call must follow at once.
#   bash scripts/offline_gpu/first_call.sh            # here: the first call; then, on the same machine:
#   bash scripts/offline_gpu/second_call.sh BUDGET_S  # the LEGO sweep sized from this call's probe
# In this call, each part under its own time limit, results in $OUT as they come:
#   1. the LEGO sweep's pace: its nine jobs for PROBE_S seconds (default 90) on random weights of SmolLM2's shape
#      (the same compute; the weights arrive with the second call), kept in $KEEP/probe for second_call.sh;
#   2. the kernel backends' error budgets on the GPU (pytest -m gpu tests/kernels, GPU_TESTS_S, default 75);
#   3. the fused-loss benchmark at the goal shape (N 8k, V 128k, d 2048, bf16; BENCH_S, default 90).
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:-outputs/first_call_out}"; KEEP="${KEEP:-/root/keep}"
mkdir -p "$OUT" "$KEEP"
export OUT
exec > >(tee -a "$OUT/first_call.log") 2>&1
START=$SECONDS
stamp() { echo "=== [$(( SECONDS - START )) s] $*"; }
if [ -f .offline/gguf-a/part ]; then  # the second call's checkout may not keep it: a copy outside the repo
  mkdir -p "$KEEP/gguf-a" && cp .offline/gguf-a/part "$KEEP/gguf-a/part"
fi
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader

stamp "1. LEGO pace probe"
PROBE_S="${PROBE_S:-90}" bash scripts/offline_gpu/lego_smollm2.sh --probe "$KEEP/probe" "${PROBE_S:-90}"
echo quit | timeout 20 nvidia-cuda-mps-control >/dev/null 2>&1  # kernels timed alone (second_call starts MPS again)

source scripts/offline_gpu/setup.sh >/dev/null || exit 1
stamp "2. kernel backends against the fp64 reference (GPU tests)"
timeout -k 5 "${GPU_TESTS_S:-75}" python3 -m pytest -p no:cacheprovider -q -m gpu tests/kernels \
  2>&1 | tail -40 > "$OUT/gpu_tests.txt"
cat "$OUT/gpu_tests.txt"

stamp "3. fused-loss benchmark, goal shape"
timeout -k 5 "${BENCH_S:-90}" python3 bench/kernels.py --device cuda --dtype bf16 --n 8192 --v 131072 --d 2048 \
  --impls "${BENCH_IMPLS:-reference,torch_ce,chunked_hint,cce,cce_ours,liger}" --reps 3 --warmup 1 \
  --out "$OUT" 2>&1 | tee "$OUT/bench_kernels.txt"
pkill -f bench/kernels.py 2>/dev/null
stamp "done"
