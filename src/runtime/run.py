"""One training run from a composed config. `train.py` is a thin Hydra wrapper around `run_training`;
tests call `run_training` directly with a config they composed."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from src.runtime.checkpoints import resolve_ckpt_path
from src.runtime.environment import configure_environment

log = logging.getLogger(__name__)


def build_strategy(cfg: DictConfig) -> Any:
    """`strategy=auto` is a name; every other strategy config is an object to instantiate."""
    if "_target_" in cfg:
        return instantiate(cfg)
    return cfg.get("name", "auto")


def build_components(cfg: DictConfig) -> tuple[pl.LightningDataModule, pl.LightningModule, pl.Trainer]:
    """Instantiate data → tokenizer → backbone → objective → trainer, in the order their sizes depend on."""
    datamodule = instantiate(cfg.data, _convert_="all")
    tokenizer = datamodule.tokenizer
    # `vocab_size: ???` = size the model to the tokenizer; pretrained models keep their own (null).
    sized = {"vocab_size": tokenizer.vocab_size} if OmegaConf.is_missing(cfg.model, "vocab_size") else {}
    backbone = instantiate(cfg.model, **sized)
    tokenizer.check_vocab(backbone.vocab_size)
    module = instantiate(cfg.method, backbone=backbone, tokenizer=tokenizer)
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c]
    loggers = [instantiate(c) for c in (cfg.get("logger") or {}).values() if c]
    trainer = instantiate(
        cfg.trainer, callbacks=callbacks, logger=loggers or False, strategy=build_strategy(cfg.strategy)
    )
    return datamodule, module, trainer


def write_run_metadata(cfg: DictConfig, output_dir: Path) -> None:
    """Rank 0 only: the resolved config and the command, so a run dir explains itself."""
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "config_resolved.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    (output_dir / "command.txt").write_text(" ".join(sys.argv) + "\n")


def run_training(cfg: DictConfig) -> dict[str, Any]:
    """Train, return metrics.json's content (also used as the Hydra sweep return value)."""
    output_dir = Path(cfg.paths.output_dir)
    configure_environment(cfg.paths.cache_dir, output_dir)
    pl.seed_everything(cfg.seed, workers=True)
    datamodule, module, trainer = build_components(cfg)
    if trainer.global_rank == 0:
        write_run_metadata(cfg, output_dir)
    ckpt = resolve_ckpt_path(
        cfg.get("ckpt_path"), output_dir, Path(cfg.paths.log_dir) / cfg.task_name / "runs"
    )
    if ckpt:
        log.info("resuming from %s", ckpt)
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt)
    metrics_file = output_dir / "metrics.json"
    return json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}
