#!/usr/bin/env bash
# The Skill-It LEGO comparison with the pretrained model (docs/results.md, Skill-It): random, stratified and
# Skill-It x seeds 1-3, nine jobs side by side on one GPU, under a wall-clock budget.
#   bash scripts/offline_gpu/lego_smollm2.sh BUDGET_S [extra train.py overrides]
#       runs the paper's 6000 steps; stopped jobs continue when the same command runs again (same machine)
#   bash scripts/offline_gpu/lego_smollm2.sh --fit BUDGET_S [extra overrides]
#       for a machine that will not be there for a second call: a probe (PROBE_S, default 150 s, of the same nine
#       jobs) measures the pace, then the sweep runs with the most steps that finish inside BUDGET_S (a multiple of
#       120, at most 6000), on the reference code's schedule, the experiment's default: an evaluation every
#       steps/120 (20 per Skill-It round; 2 per round kept the untrained step-0 losses in round 2's window on the
#       H200, docs/results.md), and a pool sized so that every skill holds a whole round's draws.
#   bash scripts/offline_gpu/lego_smollm2.sh --probe PROBE_DIR PROBE_S [extra overrides]
#       only the probe, kept in PROBE_DIR for a later --fit-from. It needs no GGUF: without one the nine jobs train
#       random weights of SmolLM2's shape (.offline/smollm2-shape: its config and tokenizer), the same compute.
#       For a machine whose upload limit splits the GGUF over two calls: probe in the first, sweep in the second.
#   bash scripts/offline_gpu/lego_smollm2.sh --fit-from PROBE_DIR BUDGET_S [extra overrides]
#       --fit with that earlier probe's pace instead of a new probe (saves the probe and a second model load)
# CURRICULA and SEEDS (comma lists) change the sweep; FIT_MULTIPLE (default 120) the step granularity of the fit;
# MPS=0 keeps CUDA's multi-process service off (on by default where it starts: nine small jobs share the GPU's
# time slices far better through it). Writes the table, the plots, the sweep's log and a tarball of the run dirs
# (no checkpoints) to $OUT (default outputs/lego_smollm2_out), a handful of files.
set -uo pipefail
cd "$(dirname "$0")/../.."
MODE=run
case "${1:-}" in
  --fit) MODE=fit; shift ;;
  --probe) MODE=probe; PROBE="${2:?usage: --probe PROBE_DIR PROBE_S}"; shift 2 ;;
  --fit-from) MODE=fit; PROBE="${2:?usage: --fit-from PROBE_DIR BUDGET_S}"; shift 2 ;;
esac
BUDGET="${1:?usage: lego_smollm2.sh [--fit | --probe DIR | --fit-from DIR] SECONDS [overrides]}"; shift
START=$SECONDS
source scripts/offline_gpu/setup.sh || exit 1
SWEEP="${SWEEP_DIR:-outputs/lego_smollm2_sweep}"
OUT="${OUT:-outputs/lego_smollm2_out}"; mkdir -p "$OUT"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"  # nine processes on one machine's cores: no oversubscription
nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv,noheader 2>/dev/null
start_mps() {  # CUDA MPS: the jobs' kernels share the GPU instead of taking turns; falls back to plain time slicing
  [ "${MPS:-1}" = 1 ] && command -v nvidia-cuda-mps-control >/dev/null || { echo "MPS: off"; return 0; }
  pgrep -f nvidia-cuda-mps-control >/dev/null 2>&1 || nvidia-cuda-mps-control -d 2>&1
  if timeout 30 python3 -c "import torch; torch.ones(1, device='cuda').sum().item()" >/dev/null 2>&1; then
    echo "MPS: on"
  else
    echo quit | timeout 20 nvidia-cuda-mps-control >/dev/null 2>&1; echo "MPS: failed to serve a client, off"
  fi
}
start_mps
# Checkpoints only when stopped at the budget (a periodic 1.6 GB save x 9 jobs costs more than it protects here).
JOBS=(experiment=skillit/lego_smollm2 "curriculum=${CURRICULA:-random,stratified,skillit}" "seed=${SEEDS:-1,2,3}"
      trainer.precision=bf16-mixed
      callbacks.progress_bar=null callbacks.model_checkpoint.every_n_train_steps=1000000)

probe() {  # $1 = seconds, then extra overrides; the nine jobs for that long, each stopped with a preemption record
  local secs="$1" shape=(); shift
  if [ ! -s .cache/pretrained/SmolLM2-135M-Instruct.Q4_1.gguf ]; then
    [ -f .offline/smollm2-shape/config.json ] || { echo "error: neither the GGUF nor .offline/smollm2-shape here"; return 1; }
    echo "probe: no GGUF here: random weights of SmolLM2's shape (same compute)"
    shape=("model.model=$PWD/.offline/smollm2-shape" model.pretrained=false
           "data.tokenizer.pretrained=$PWD/.offline/smollm2-shape")
  fi
  rm -rf "$PROBE"
  # A small pool: the probe measures the pace, and the 6000-step default's 360k questions would spend its time on
  # generating and tokenizing them. Evaluations as often as in the run it sizes (steps/120: every 20 steps at
  # ~2400): a probe without them overestimated the pace by 1.5x in the CPU rehearsal (docs/scaleout.md).
  python3 scripts/budget_sweep.py --dir "$PROBE" --budget "$secs" --grace 90 -- "${JOBS[@]}" "${shape[@]}" "$@" \
    trainer.max_steps=1000000 data.n_train="${PROBE_POOL:-20000}" \
    trainer.val_check_interval="${PROBE_EVAL_EVERY:-20}" | tee "$OUT/probe.txt"
  find "$PROBE" -name checkpoints -type d -prune -exec rm -rf {} +  # nine 1.6 GB checkpoints; the records stay
  # What --fit needs later: the probe's length (its jobs' start-up = that minus their training time) and whether
  # the GGUF's dequantisation (a few seconds more per start) was part of it.
  echo "$secs ${#shape[@]}" > "$PROBE/probe_s"
}

if [ "$MODE" = probe ]; then
  probe "$BUDGET" "$@" || exit 1
  python3 scripts/offline_gpu/fit_steps.py "$PROBE" 100000 --max 1000000 --multiple 1 >/dev/null 2>>"$OUT/probe.txt"
  tail -1 "$OUT/probe.txt"
  exit 0
fi
if [ "$MODE" = fit ]; then
  [ ! -s .cache/pretrained/SmolLM2-135M-Instruct.Q4_1.gguf ] && { echo "error: no SmolLM2 GGUF here: the sweep" \
    "needs the pretrained model (scripts/offline_gpu/pack.sh, setup.sh)"; exit 1; }
  if [ -n "$(ls -A "$SWEEP" 2>/dev/null)" ]; then  # its jobs have another max_steps, or are finished
    echo "error: $SWEEP already holds runs; --fit starts a new sweep: set SWEEP_DIR=<new dir>, or continue that" \
         "sweep without --fit (pass the trainer.max_steps it printed)"; exit 1
  fi
  if [ -z "${PROBE:-}" ]; then
    PROBE_S="${PROBE_S:-150}"; PROBE="$SWEEP.probe"
    probe "$PROBE_S" "$@" || exit 1
  else
    [ -f "$PROBE/probe_s" ] || { echo "error: $PROBE holds no probe (run --probe $PROBE SECONDS first)"; exit 1; }
    echo "fit from the probe in $PROBE" | tee "$OUT/probe.txt"
  fi
  read -r PROBE_S SHAPE_ONLY < "$PROBE/probe_s"
  EXTRA_LOAD=$(( SHAPE_ONLY > 0 ? ${GGUF_LOAD_S:-30} : 0 ))
  # The sweep restarts the jobs (model load again, ~the probe's start-up) and ends with a checkpoint-free stop.
  LOAD_S=$(python3 -c "import json,glob; r=[json.load(open(p))[-1] for p in glob.glob('$PROBE/*/preemptions.json')]; \
print(int(max((float('$PROBE_S') - x['train_s'] for x in r), default=60)) + $EXTRA_LOAD)")
  LEFT=$(( BUDGET - (SECONDS - START) ))
  STEPS=$(python3 scripts/offline_gpu/fit_steps.py "$PROBE" $(( LEFT - LOAD_S - 45 )) \
    --multiple "${FIT_MULTIPLE:-120}" 2>&1 | tee -a "$OUT/probe.txt" | tail -1)
  if ! [[ "$STEPS" =~ ^[0-9]+$ ]]; then  # too slow for one multiple: run one anyway, the budget stops it
    echo "$STEPS"; STEPS="${FIT_MULTIPLE:-120}"
    echo "warning: running trainer.max_steps=$STEPS anyway; the jobs stop at the budget, short of it" \
      | tee -a "$OUT/probe.txt"
  fi
  echo "fit: trainer.max_steps=$STEPS (start-up ${LOAD_S} s, $LEFT s left)" | tee -a "$OUT/probe.txt"
  set -- trainer.max_steps="$STEPS" "$@"
  # The evaluation interval follows max_steps (the experiment's ${ts.every:...,120}); the pool only needs to hold one
  # round of the smallest skill (1/11 of the pool) at this length, not the 6000-step default's 360k questions.
  set -- data.n_train=$(( (STEPS / 6 * 32 * 11 + 999) / 1000 * 1000 )) "$@"
  BUDGET=$(( LEFT - 20 ))
fi
python3 scripts/budget_sweep.py --dir "$SWEEP" --budget "$BUDGET" --grace "${GRACE_S:-90}" -- "${JOBS[@]}" "$@" \
  | tee "$OUT/sweep.txt"
rc=${PIPESTATUS[0]}
python3 scripts/skillit_results.py "$SWEEP" --img "$OUT" --prefix lego_smollm2 > "$OUT/table.md" 2>&1
cat "$OUT/table.md"
for d in "$SWEEP"/*/; do  # tokens/s and wall time per job, for the docs
  [ -f "$d/metrics.json" ] && python3 -c "import json,sys; m=json.load(open(sys.argv[1])); \
t = m.get('train/tokens_per_s_median'); \
print(sys.argv[2], m['steps'], 'steps', m['wall_time_s'], 's', round(t) if t == t and t is not None else 'n/a', 'tokens/s')" \
    "$d/metrics.json" "$(basename "$d")" | tee -a "$OUT/sweep.txt"
done
tar czf "$OUT/runs.tgz" --exclude='checkpoints' "$SWEEP" 2>/dev/null
exit "$rc"
