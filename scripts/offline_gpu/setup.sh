#!/usr/bin/env bash
# Prepare an offline GPU machine that received this checkout plus the folders scripts/offline_gpu/pack.sh made:
# reassemble the SmolLM2 GGUF into the model cache (checked against its sha256), install the packed wheels into
# /tmp/site (no PyPI: --no-index) and print what will run. Source it, so that PYTHONPATH stays set:
#   source scripts/offline_gpu/setup.sh
# Idempotent: a second call finds the GGUF and the wheels in place and only prints the versions.
cd "$(dirname "${BASH_SOURCE[0]}")/../.." || return 1
_ts_fail() { echo "error: $*" >&2; return 1; }
_gguf=.cache/pretrained/SmolLM2-135M-Instruct.Q4_1.gguf
if [ ! -s "$_gguf" ]; then
  if [ -f .offline/gguf-a/part ] && [ -f .offline/gguf-b/part ]; then
    mkdir -p .cache/pretrained
    cat .offline/gguf-a/part .offline/gguf-b/part > "$_gguf.tmp" || { _ts_fail "could not write $_gguf"; return 1; }
    if [ "$(sha256sum "$_gguf.tmp" | cut -d' ' -f1)" != "$(cat .offline/gguf-b/sha256)" ]; then
      rm -f "$_gguf.tmp"; _ts_fail "the two GGUF halves do not match their sha256: pack and send them again"; return 1
    fi
    mv "$_gguf.tmp" "$_gguf"
  else
    echo "note: no SmolLM2 GGUF here (.offline/gguf-a and gguf-b not both present): tiny models only" >&2
  fi
fi
if ls .whl/*.whl >/dev/null 2>&1 && [ ! -f /tmp/site/.tokensmith-wheels ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { _ts_fail "installing the packed wheels failed"; return 1; }
  touch /tmp/site/.tokensmith-wheels
fi
export PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
export PYTHONUNBUFFERED=1 WANDB_MODE="${WANDB_MODE:-offline}"
python3 - <<'PY' || { _ts_fail "the Python stack does not import (above)"; return 1; }
import importlib, platform
import torch
names = ["lightning", "transformers", "hydra", "omegaconf", "datasets", "gguf", "tokenizers"]
vers = {n: getattr(importlib.import_module(n), "__version__", "?") for n in names}
gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
print(f"python {platform.python_version()}, torch {torch.__version__} ({gpu}),",
      ", ".join(f"{k} {v}" for k, v in vers.items()))
PY
