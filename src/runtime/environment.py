"""Process environment for a run: keep every cache and side-file inside the project's cache/run dirs.

Libraries (W&B, Hugging Face, DeepSpeed's JIT extensions) default to writing under $HOME; on shared clusters
and in CI that is slow, racy between jobs, or read-only. We point them into `paths.cache_dir` unless the user
already chose a location.
"""

from __future__ import annotations

import os
from pathlib import Path


def configure_environment(cache_dir: str | Path, output_dir: str | Path) -> None:
    """Set cache locations (without overriding anything the user exported)."""
    cache = Path(cache_dir)
    out = Path(output_dir)
    defaults = {
        "HF_HOME": cache / "huggingface",
        "HF_DATASETS_CACHE": cache / "huggingface" / "datasets",
        "TORCH_EXTENSIONS_DIR": cache / "torch_extensions",
        "WANDB_DIR": out,
        "WANDB_CACHE_DIR": cache / "wandb",
        "WANDB_CONFIG_DIR": cache / "wandb-config",
        "WANDB_DATA_DIR": cache / "wandb-data",
        "MPLCONFIGDIR": cache / "matplotlib",
    }
    for key, path in defaults.items():
        if key not in os.environ:
            Path(path).mkdir(parents=True, exist_ok=True)
            os.environ[key] = str(path)
    # Tokenizers' Rust thread pool and forked DataLoader workers deadlock; workers tokenize nothing anyway.
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # DeepSpeed picks its accelerator once, at import; without CUDA it must be told "cpu" (strategy=deepspeed_*
    # on CPU processes) instead of probing for devices. Set before anything imports deepspeed.
    if "DS_ACCELERATOR" not in os.environ and not _cuda_available():
        os.environ["DS_ACCELERATOR"] = "cpu"


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()
