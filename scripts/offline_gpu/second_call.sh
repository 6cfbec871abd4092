#!/usr/bin/env bash
# The second of two calls (first_call.sh says why two): reassemble the GGUF from the half the first call left in
# $KEEP and the half this call carries, then run the LEGO sweep with the most steps that the first call's probe
# says fit BUDGET_S (lego_smollm2.sh --fit-from). Jobs still running at the budget are stopped without waiting
# for a checkpoint nobody could resume (GRACE_S, default 20), and compared at the last step all of them reached.
#   bash scripts/offline_gpu/second_call.sh BUDGET_S
set -uo pipefail
cd "$(dirname "$0")/../.."
KEEP="${KEEP:-/root/keep}"
BUDGET="${1:?usage: second_call.sh BUDGET_S}"
if [ ! -f .offline/gguf-a/part ]; then
  [ -f "$KEEP/gguf-a/part" ] || { echo "error: no first GGUF half here or in $KEEP: run first_call.sh first"; exit 1; }
  mkdir -p .offline/gguf-a && cp "$KEEP/gguf-a/part" .offline/gguf-a/part
fi
GRACE_S="${GRACE_S:-20}" exec bash scripts/offline_gpu/lego_smollm2.sh --fit-from "$KEEP/probe" "$BUDGET"
