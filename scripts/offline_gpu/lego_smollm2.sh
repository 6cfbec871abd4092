#!/usr/bin/env bash
# The Skill-It LEGO comparison with the pretrained model (docs/results.md, Skill-It): random, stratified and
# Skill-It x seeds 1-3, nine jobs side by side on one GPU, stopped at the budget and continued by the next call.
#   bash scripts/offline_gpu/lego_smollm2.sh BUDGET_S [extra train.py overrides]
# e.g. `bash scripts/offline_gpu/lego_smollm2.sh 480`; again with the same overrides until it says all finished.
# Writes the table, the plots and every job's skills.json and log to $OUT (default outputs/lego_smollm2_out),
# as one tarball plus the table, so that a few files carry all of it.
set -uo pipefail
cd "$(dirname "$0")/../.."
BUDGET="${1:?usage: lego_smollm2.sh BUDGET_S [overrides]}"; shift
source scripts/offline_gpu/setup.sh || exit 1
SWEEP="${SWEEP_DIR:-outputs/lego_smollm2_sweep}"
OUT="${OUT:-outputs/lego_smollm2_out}"; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv,noheader 2>/dev/null
# Checkpoints only when stopped at the budget (a periodic 1.6 GB save x 9 jobs costs more than it protects here).
python3 scripts/budget_sweep.py --dir "$SWEEP" --budget "$BUDGET" --grace 90 -- \
  experiment=skillit/lego_smollm2 curriculum=random,stratified,skillit seed=1,2,3 \
  trainer.precision=bf16-mixed callbacks.progress_bar=null callbacks.model_checkpoint.every_n_train_steps=1000000 \
  "$@" | tee "$OUT/sweep.txt"
rc=${PIPESTATUS[0]}
python3 scripts/skillit_results.py "$SWEEP" --img "$OUT" --prefix lego_smollm2 > "$OUT/table.md" 2>&1
cat "$OUT/table.md"
for d in "$SWEEP"/*/; do  # tokens/s per job, for the docs
  n=$(basename "$d"); [ -f "$d/metrics.json" ] && python3 -c "import json,sys; m=json.load(open(sys.argv[1])); \
print(sys.argv[2], {k: round(v, 1) for k, v in m.items() if 'tokens_per_s' in k})" "$d/metrics.json" "$n"
done
tar czf "$OUT/runs.tgz" --exclude='*.ckpt' --exclude='checkpoints' "$SWEEP" 2>/dev/null
exit "$rc"
