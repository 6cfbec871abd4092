"""One training run from a composed config. `train.py` is a thin Hydra wrapper around `run_training`;
tests call `run_training` directly with a config they composed.

The top of the runtime: it composes the primitives of `src/runtime/build.py` into one run and hands over to a
recipe (`src/recipes/`) when the config asks for several stages.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from omegaconf import DictConfig

from src.recipes.finetune import FINETUNE_DIR, preflight, run_finetune
from src.recipes.registry import run_recipe
from src.runtime.build import build_components, fit, write_run_metadata
from src.runtime.checkpoints import ensure_fresh_run_dir, resolve_ckpt_path, saved_form
from src.runtime.environment import configure_environment
from src.runtime.preemption import auto_resume_ckpt
from src.runtime.wandb_resume import pin_wandb_run_id


def run_training(cfg: DictConfig) -> dict[str, Any]:
    """Train, return metrics.json's content (also used as the Hydra sweep return value)."""
    output_dir = Path(cfg.paths.output_dir)
    configure_environment(cfg.paths.cache_dir, output_dir)
    pl.seed_everything(cfg.seed, workers=True)
    if cfg.get("recipe"):  # a multi-stage recipe owns its run dir and stages (src/recipes/)
        return run_recipe(cfg)
    if cfg.get("finetune"):
        preflight(cfg, output_dir)  # stage 2's config mistakes, refused before stage 1 trains
    ckpt = resolve_ckpt_path(
        cfg.get("ckpt_path"), output_dir, Path(cfg.paths.log_dir) / cfg.task_name / "runs",
        config=saved_form(cfg) if cfg.get("ckpt_path") not in (None, "", "null") else None,
    ) or auto_resume_ckpt(output_dir, also=[FINETUNE_DIR] if cfg.get("finetune") else [])  # preempted / requeued
    if ckpt is None:
        ensure_fresh_run_dir(output_dir)  # never overwrite another launch's results (src/runtime/checkpoints.py)
    pin_wandb_run_id(cfg, output_dir, ckpt)  # the same W&B run across requeues (src/runtime/wandb_resume.py)
    datamodule, module, trainer = build_components(cfg)
    if trainer.global_rank == 0:
        write_run_metadata(cfg, output_dir)
    fit(trainer, module, datamodule, ckpt)
    if cfg.get("finetune"):  # two-stage recipe (src/recipes/finetune.py), e.g. conf/experiment/stochastok/
        return run_finetune(cfg, module, output_dir, resumed=ckpt is not None)
    metrics_file = output_dir / "metrics.json"
    return json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}
