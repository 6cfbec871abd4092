#!/usr/bin/env bash
# The Skill-It LEGO comparison with the pretrained model (docs/results.md, Skill-It): random, stratified and
# Skill-It x seeds 1-3, nine jobs side by side on one GPU, under a wall-clock budget.
#   bash scripts/offline_gpu/lego_smollm2.sh BUDGET_S [extra train.py overrides]
#       runs the paper's 6000 steps; stopped jobs continue when the same command runs again (same machine)
#   bash scripts/offline_gpu/lego_smollm2.sh --fit BUDGET_S [extra overrides]
#       for a machine that will not be there for a second call: a probe (PROBE_S, default 150 s, of the same nine
#       jobs) measures the pace, then the sweep runs with the most steps that finish inside BUDGET_S (a multiple of
#       1500: 6 Skill-It rounds of whole 250-step evaluations; at most 6000)
# CURRICULA and SEEDS (comma lists) change the sweep; FIT_MULTIPLE (default 1500) the step granularity of --fit.
# Writes the table, the plots, the sweep's log and a tarball of the run dirs (no checkpoints) to $OUT (default
# outputs/lego_smollm2_out), a handful of files.
set -uo pipefail
cd "$(dirname "$0")/../.."
FIT=0; [ "${1:-}" = "--fit" ] && { FIT=1; shift; }
BUDGET="${1:?usage: lego_smollm2.sh [--fit] BUDGET_S [overrides]}"; shift
START=$SECONDS
source scripts/offline_gpu/setup.sh || exit 1
SWEEP="${SWEEP_DIR:-outputs/lego_smollm2_sweep}"
OUT="${OUT:-outputs/lego_smollm2_out}"; mkdir -p "$OUT"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"  # nine processes on one machine's cores: no oversubscription
nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv,noheader 2>/dev/null
# Checkpoints only when stopped at the budget (a periodic 1.6 GB save x 9 jobs costs more than it protects here).
JOBS=(experiment=skillit/lego_smollm2 "curriculum=${CURRICULA:-random,stratified,skillit}" "seed=${SEEDS:-1,2,3}"
      trainer.precision=bf16-mixed
      callbacks.progress_bar=null callbacks.model_checkpoint.every_n_train_steps=1000000)
if [ "$FIT" = 1 ]; then
  if [ -n "$(ls -A "$SWEEP" 2>/dev/null)" ]; then  # its jobs have another max_steps, or are finished
    echo "error: $SWEEP already holds runs; --fit starts a new sweep: set SWEEP_DIR=<new dir>, or continue that" \
         "sweep without --fit (pass the trainer.max_steps it printed)"; exit 1
  fi
  PROBE_S="${PROBE_S:-150}"; PROBE="$SWEEP.probe"; rm -rf "$PROBE"
  python3 scripts/budget_sweep.py --dir "$PROBE" --budget "$PROBE_S" --grace 90 -- "${JOBS[@]}" "$@" \
    trainer.max_steps=1000000 | tee "$OUT/probe.txt"
  # The sweep restarts the jobs (model load again, ~the probe's start-up) and ends with a checkpoint-free stop.
  LOAD_S=$(python3 -c "import json,glob; r=[json.load(open(p))[-1] for p in glob.glob('$PROBE/*/preemptions.json')]; \
print(int(max(($PROBE_S - x['train_s'] for x in r), default=60)))")
  LEFT=$(( BUDGET - (SECONDS - START) ))
  STEPS=$(python3 scripts/offline_gpu/fit_steps.py "$PROBE" $(( LEFT - LOAD_S - 45 )) \
    --multiple "${FIT_MULTIPLE:-1500}" 2>&1 | tee -a "$OUT/probe.txt" | tail -1)
  rm -rf "$PROBE"  # nine 1.6 GB checkpoints
  [[ "$STEPS" =~ ^[0-9]+$ ]] || { echo "$STEPS"; exit 1; }
  set -- trainer.max_steps="$STEPS" "$@"
  BUDGET=$(( LEFT - 20 ))
fi
python3 scripts/budget_sweep.py --dir "$SWEEP" --budget "$BUDGET" --grace 90 -- "${JOBS[@]}" "$@" | tee "$OUT/sweep.txt"
rc=${PIPESTATUS[0]}
python3 scripts/skillit_results.py "$SWEEP" --img "$OUT" --prefix lego_smollm2 > "$OUT/table.md" 2>&1
cat "$OUT/table.md"
for d in "$SWEEP"/*/; do  # tokens/s and wall time per job, for the docs
  [ -f "$d/metrics.json" ] && python3 -c "import json,sys; m=json.load(open(sys.argv[1])); \
print(sys.argv[2], m['steps'], 'steps', m['wall_time_s'], 's', round(m['train/tokens_per_s_median']), 'tokens/s')" \
    "$d/metrics.json" "$(basename "$d")" | tee -a "$OUT/sweep.txt"
done
tar czf "$OUT/runs.tgz" --exclude='checkpoints' "$SWEEP" 2>/dev/null
exit "$rc"
