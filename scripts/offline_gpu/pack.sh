#!/usr/bin/env bash
# Pack what an offline GPU machine needs to train tokensmith, for machines that have PyTorch, Lightning and
# transformers installed but no PyPI access (an air-gapped cluster node, a GPU lent for minutes):
#   .whl/                 pure-Python wheels of our dependencies such an image usually lacks (Hydra, datasets, gguf,
#                         DeepSpeed and pydantic), and of Cut Cross-Entropy and Liger-Kernel
#   .offline/gguf-a|b/    the SmolLM2-135M GGUF (98 MB) in two halves, for transfers capped below its size
#   .offline/smollm2-shape/  its config and tokenizer (random weights of the same shape: a pace probe)
# Run here, in the repository root, with PyPI reachable:
#   bash scripts/offline_gpu/pack.sh [python version of the GPU machine, default 3.12]
# then send the checkout plus those folders, and start every job there with scripts/offline_gpu/setup.sh.
set -euo pipefail
cd "$(dirname "$0")/../.."
PYV="${1:-3.12}"
PY="${PY:-.venv/bin/python}"
# Versions of our tested resolve (constraints.txt), so the GPU machine runs what CI ran.
pin() { grep -iE "^$1==" constraints.txt | head -1; }
PKGS=(hydra-core omegaconf datasets dill multiprocess gguf)
rm -rf .whl && mkdir -p .whl
for p in "${PKGS[@]}"; do
  spec="$(pin "$p")"
  [ -n "$spec" ] || { echo "error: $p is not pinned in constraints.txt" >&2; exit 1; }
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version "$PYV" --implementation py \
    --platform any -d .whl "$spec" 2>/dev/null \
  || "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version "$PYV" --implementation cp \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl "$spec"
done
# The peers' fused cross-entropy kernels (kernel_impl=auto routes to CCE on CUDA; bench/kernels.py compares both):
# GPU-only, so not in constraints.txt; pure-Python wheels (Triton comes with the machine's torch).
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version "$PYV" --implementation py --platform any \
  -d .whl cut-cross-entropy==25.1.1 liger-kernel==0.8.5
# antlr4-python3-runtime (Hydra's parser) is published as an sdist only: build its pure-Python wheel here.
"$PY" -m pip wheel -q --no-deps -w .whl "$(pin antlr4-python3-runtime)"
# DeepSpeed (strategy=deepspeed_*; tests/test_strategies_gpu.py), an sdist too: a pure-Python wheel without
# prebuilt ops (DeepSpeed builds any op it needs at run time), plus the dependencies GPU images tend to lack.
for p in hjson pydantic annotated-types typing-inspection; do
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version "$PYV" --implementation py \
    --platform any -d .whl "$(pin "$p")"
done
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version "$PYV" --implementation cp \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl "$(pin pydantic_core)"
DS_BUILD_OPS=0 "$PY" -m pip wheel -q --no-deps --no-build-isolation -w .whl "$(pin deepspeed)"

GGUF="$("$PY" -c 'from src.assets.pretrained import ensure_smollm2_gguf; print(ensure_smollm2_gguf())')"
rm -rf .offline && mkdir -p .offline/gguf-a .offline/gguf-b
# SmolLM2's config and tokenizer alone (3.5 MB): random weights of its shape, for a pace probe on a machine that
# has only one half of the GGUF yet (lego_smollm2.sh --probe)
"$PY" - "$GGUF" <<'PY'
import sys
from pathlib import Path

from transformers import AutoConfig, AutoTokenizer

gguf = Path(sys.argv[1])
for cls in (AutoConfig, AutoTokenizer):
    cls.from_pretrained(str(gguf.parent), gguf_file=gguf.name).save_pretrained(".offline/smollm2-shape")
PY
half=$(( ($(stat -c %s "$GGUF") + 1) / 2 ))
head -c "$half" "$GGUF" > .offline/gguf-a/part
tail -c +"$((half + 1))" "$GGUF" > .offline/gguf-b/part
sha256sum "$GGUF" | cut -d' ' -f1 > .offline/gguf-b/sha256
cat .offline/gguf-a/part .offline/gguf-b/part | sha256sum -c <(sed "s/\$/  -/" .offline/gguf-b/sha256) >/dev/null
du -sh .whl .offline/gguf-a .offline/gguf-b .offline/smollm2-shape
ls .whl
