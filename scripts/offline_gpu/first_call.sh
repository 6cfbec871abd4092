#!/usr/bin/env bash
# The first of two calls on a lent GPU whose upload limit (64 MiB a call on ours) splits the SmolLM2 GGUF in two:
# this call carries `.whl` and `.offline/gguf-a` (+ smollm2-shape), the second `.offline/gguf-b`. Both halves
# stay on the machine between calls only while it is held, so the second call must follow at once.
#   bash scripts/offline_gpu/first_call.sh            # here: the first call; then, on the same machine:
#   bash scripts/offline_gpu/second_call.sh BUDGET_S  # the LEGO sweep sized from this call's probe
# It also runs the GPU checks that need no GGUF, alone (PARTS=strategies,throughput after the sweep, in a third
# call that carries `.whl` only, when device time is left). PARTS (comma list, default probe,gputests,kernels)
# picks them; each has its own time limit and writes its results to $OUT as it goes:
#   probe       the LEGO sweep's pace: its jobs for PROBE_S seconds (default 90) on random weights of SmolLM2's
#               shape (the same compute; the weights arrive with the second call), kept in $KEEP/probe
#   gputests    the kernel backends' error budgets on the GPU (pytest -m gpu tests/kernels; GPU_TESTS_S, 75)
#   kernels     the fused-loss benchmark at the goal shape (N 8k, V 128k, d 2048, bf16; BENCH_S, 90)
#   strategies  ZeRO-3 and FSDP2 vs one device, SmolLM2's shape (pytest -m gpu tests/test_strategies_gpu.py;
#               STRATEGIES_S, 240)
#   throughput  the ~350M transformer's training step: bf16-true + fp32 master weights + fused AdamW at micro-batch
#               8 and 16, then the bf16-mixed baseline, each compiled (bench/train_throughput.py; TPUT_S, 360,
#               shared by the configurations, TPUT_CONF_S each, 150)
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:-outputs/first_call_out}"; KEEP="${KEEP:-/root/keep}"
PARTS=",${PARTS:-probe,gputests,kernels},"
mkdir -p "$OUT" "$KEEP"
export OUT
exec > >(tee -a "$OUT/first_call.log") 2>&1
START=$SECONDS
stamp() { echo "=== [$(( SECONDS - START )) s] $*"; }
want() { [[ "$PARTS" == *",$1,"* ]]; }
if [ -f .offline/gguf-a/part ]; then  # the second call's checkout may not keep it: a copy outside the repo
  mkdir -p "$KEEP/gguf-a" && cp .offline/gguf-a/part "$KEEP/gguf-a/part"
fi
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader

if want probe; then
  stamp "probe: LEGO pace"
  PROBE_S="${PROBE_S:-90}" bash scripts/offline_gpu/lego_smollm2.sh --probe "$KEEP/probe" "${PROBE_S:-90}"
  echo quit | timeout 20 nvidia-cuda-mps-control >/dev/null 2>&1  # the rest timed alone (second_call restarts MPS)
fi

source scripts/offline_gpu/setup.sh >/dev/null || exit 1
if want gputests; then
  stamp "gputests: kernel backends against the fp64 reference"
  timeout -k 5 "${GPU_TESTS_S:-75}" python3 -m pytest -p no:cacheprovider -q -m gpu tests/kernels \
    2>&1 | tail -40 > "$OUT/gpu_tests.txt"
  cat "$OUT/gpu_tests.txt"
fi

if want kernels; then
  stamp "kernels: fused-loss benchmark, goal shape"
  timeout -k 5 "${BENCH_S:-90}" python3 bench/kernels.py --device cuda --dtype bf16 --n 8192 --v 131072 --d 2048 \
    --impls "${BENCH_IMPLS:-reference,torch_ce,chunked_hint,cce,cce_ours,liger}" --reps 3 --warmup 1 \
    --out "$OUT" 2>&1 | tee "$OUT/bench_kernels.txt"
  pkill -f bench/kernels.py 2>/dev/null
fi

if want strategies; then
  stamp "strategies: ZeRO-3 and FSDP2 vs one device (SmolLM2 shape, fp32)"
  timeout -k 5 "${STRATEGIES_S:-240}" python3 -m pytest -p no:cacheprovider -q -s -m gpu \
    tests/test_strategies_gpu.py 2>&1 | tail -40 > "$OUT/strategies.txt"
  cat "$OUT/strategies.txt"
fi

if want throughput; then
  stamp "throughput: ~350M transformer, one GPU"
  # TPUT_SHAPE: another shape or device for a rehearsal on CPU (e.g. "--device cpu --d 64 --layers 2 --heads 2")
  read -r -a shape <<< "${TPUT_SHAPE:---device cuda --d 1024 --layers 24 --heads 16 --seq 2048 --vocab 32768 --compile}"
  shape+=(--steps 8 --rounds 1)
  tput_end=$(( SECONDS + ${TPUT_S:-360} ))
  for conf in "bf16-true --fused-adamw --batch 8 --modes tokensmith,bare_fused,bare_naive" \
              "bf16-true --fused-adamw --batch 16 --modes tokensmith,bare_fused" \
              "bf16 --batch 8 --modes tokensmith,bare_fused"; do
    left=$(( tput_end - SECONDS )); [ "$left" -gt 30 ] || { echo "throughput: no time left for --dtype $conf"; break; }
    lim=$(( left < ${TPUT_CONF_S:-150} ? left : ${TPUT_CONF_S:-150} ))
    name="$(echo "$conf" | tr -s ' ,-' '_' | cut -c1-60)"
    # shellcheck disable=SC2086  # conf is a list of flags
    timeout -k 5 "$lim" python3 bench/train_throughput.py "${shape[@]}" --dtype $conf \
      --out "$OUT/throughput$name.json" 2>&1 | tee "$OUT/throughput$name.log" \
      | grep -E '^(\||cuda|cpu|[A-Za-z]*Error)' | tee -a "$OUT/throughput.txt"
  done
fi
stamp "done"
