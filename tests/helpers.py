"""Test helpers: compose the real config tree (conf/) the way `python train.py` does."""

from __future__ import annotations

import os
from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

import src.runtime.resolvers  # noqa: F401  (registers ${ts.*})

ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = ROOT / "conf"
EXPERIMENTS = sorted(p.relative_to(CONF_DIR / "experiment").with_suffix("").as_posix()
                     for p in (CONF_DIR / "experiment").rglob("*.yaml"))

# Generated corpora and trained tokenizers are content-hashed: share them across tests (and with CI's cache).
os.environ.setdefault("TOKENSMITH_CACHE", str(ROOT / ".cache"))
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def compose_cfg(overrides: list[str], run_dir: Path) -> DictConfig:
    """The composed training config with its run dir redirected into `run_dir`."""
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR), job_name="test"):
        return compose(
            config_name="train",
            overrides=[*overrides, f"paths.output_dir={run_dir}", f"paths.log_dir={run_dir.parent / 'logs'}"],
        )
