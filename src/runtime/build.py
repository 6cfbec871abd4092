"""The run primitives: build a run's components from a config, fit them, write what explains the run dir.

Everything one stage of training needs and nothing about how stages are composed: `src/runtime/run.py` (one run)
and the recipes in `src/recipes/` (several stages, e.g. pretrain → fine-tune) call these. This module imports no
recipe, so recipes can import it without a circle.
"""

from __future__ import annotations

import logging
import shlex
import sys
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from hydra.utils import get_class, instantiate
from lightning.pytorch.callbacks import ProgressBar
from lightning.pytorch.strategies import DDPStrategy
from omegaconf import DictConfig, OmegaConf

from src.callbacks.accumulation import AccumulationAlignment
from src.callbacks.artifacts import RunArtifacts
from src.models.components.compact_lora import TOKEN_KEYS, resolve_token_names
from src.runtime.checkpoint_io import AtomicCheckpointIO
from src.runtime.checkpoints import CheckpointMismatchError, mismatch_message
from src.runtime.errors import ConfigError
from src.runtime.preemption import cluster_plugins, find_preemption_callback

log = logging.getLogger(__name__)


def build_strategy(cfg: DictConfig) -> Any:
    """`strategy=auto` is a name; every other strategy config is an object to instantiate."""
    if "_target_" in cfg:
        return instantiate(cfg)
    return cfg.get("name", "auto")


def progress_bar_switch(callbacks: list[Any], enabled: bool) -> tuple[list[Any], bool]:
    """Either switch turns the bar off: `trainer.enable_progress_bar=false` or `callbacks.progress_bar=null`.

    Lightning alone would refuse the first while our bar callback is configured, and answer the second with its
    own default bar; a quiet sweep should need only one override.
    """
    if not enabled:
        callbacks = [c for c in callbacks if not isinstance(c, ProgressBar)]
    return callbacks, any(isinstance(c, ProgressBar) for c in callbacks)


def val_interval_in_batches(trainer_cfg: DictConfig) -> dict[str, Any]:
    """`trainer.val_check_interval` counts optimizer steps here, like max_steps, checkpoints and the curricula's
    evaluations; Lightning counts it in micro-batches. Under accumulation the two differ (accumulate 2: validation
    every 2 instead of 4 steps, in the middle of an accumulation window), so the int is converted."""
    interval, acc = trainer_cfg.get("val_check_interval"), int(trainer_cfg.get("accumulate_grad_batches") or 1)
    if isinstance(interval, int) and acc > 1:
        return {"val_check_interval": interval * acc}
    return {}


CURRICULUM_STAGES = ("all", "finetune")


def curriculum_applies(cfg: DictConfig) -> bool:
    """Whether this stage gets the `curriculum=` callback. `curriculum_stage: finetune` (a two-stage experiment
    whose first stage has no skills, e.g. grpo/arith: SFT, then GRPO on skill-labelled prompts) keeps it for the
    second stage, the config without a `finetune:` node left (src/recipes/finetune.py); `all` (default): every stage.
    Only the callback is withheld: a first-stage data config that reads `curriculum.mixture` (lego, addition,
    skills_jsonl) would still sample by that fixed mixture, so such an experiment sets stage 1's `data.mixture`."""
    if not (cfg.get("curriculum") or {}).get("callback"):
        return False
    stage = cfg.get("curriculum_stage") or "all"
    if stage not in CURRICULUM_STAGES:
        raise ConfigError(f"curriculum_stage={stage!r} is not one of {CURRICULUM_STAGES}")
    return not (stage == "finetune" and cfg.get("finetune"))


def lora_token_ids(model_cfg: DictConfig, tokenizer: Any, n_pads: int | None = None) -> dict[str, Any]:
    """`model.lora` with its token names (`trainable_token_indices: pads`, `token_init: eos`) replaced by this
    tokenizer's ids, as an instantiate override; {} when nothing is named (src/models/components/compact_lora.py).
    `pads` means the pads the data lays out (the first `n_pads` of the tokenizer's reserve, as the canvas format
    takes them), so a reserve larger than `data.n_pads` does not train rows no batch ever holds."""
    lora = model_cfg.get("lora")
    if not lora or not any(isinstance(lora.get(k), str) for k in TOKEN_KEYS):
        return {}
    pads = list(tokenizer.reserved_pad_ids)
    names = {"pads": pads if n_pads is None else pads[:n_pads], "eos": tokenizer.eos_id, "mask": tokenizer.mask_id}
    try:
        return {"lora": resolve_token_names(lora, names)}
    except ValueError as err:
        raise ConfigError(str(err)) from None


def check_data_format(cfg: DictConfig) -> None:
    """One ConfigError, before any data is built, when the objective cannot train on the data's format (its class
    declares `data_formats`; a data config without `format`, e.g. a task's own module, is not checked)."""
    target, fmt = (cfg.get("method") or {}).get("_target_"), (cfg.get("data") or {}).get("format")
    if not target or not isinstance(fmt, str):
        return
    try:
        cls = get_class(target)
    except Exception:  # noqa: BLE001 (a bad _target_ gets Hydra's own error when instantiated)
        return
    formats = getattr(cls, "data_formats", None)
    if formats and fmt not in formats:
        raise ConfigError(f"{cls.__name__} (method._target_={target}) trains on {cls.data_hint}; this data config "
                          f"gives data.format={fmt}. Pick a data config of that format.")


def build_components(cfg: DictConfig) -> tuple[pl.LightningDataModule, pl.LightningModule, pl.Trainer]:
    """Instantiate data → tokenizer → backbone → objective → trainer, in the order their sizes depend on."""
    check_data_format(cfg)
    datamodule = instantiate(cfg.data, _convert_="all")
    tokenizer = datamodule.tokenizer
    # `vocab_size: ???` = size the model to the tokenizer; pretrained models keep their own (null).
    sized = {"vocab_size": tokenizer.vocab_size} if OmegaConf.is_missing(cfg.model, "vocab_size") else {}
    lora = lora_token_ids(cfg.model, tokenizer, getattr(datamodule, "n_pads", None))  # canvas data: the pads it uses
    backbone = instantiate(cfg.model, **sized, **lora)
    tokenizer.check_vocab(backbone.vocab_size)
    module = instantiate(cfg.method, backbone=backbone, tokenizer=tokenizer)
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c]
    # curriculum=<name> may bring the callback that drives its data mixture (conf/curriculum/, docs/skillit.md)
    if curriculum_applies(cfg):
        callbacks.append(instantiate(cfg.curriculum.callback))
    callbacks.append(AccumulationAlignment())  # resume with another accumulation (src/callbacks/accumulation.py)
    callbacks, bar = progress_bar_switch(callbacks, bool(cfg.trainer.get("enable_progress_bar", True)))
    loggers = [instantiate(c) for c in (cfg.get("logger") or {}).values() if c]
    plugins = cluster_plugins(callbacks)  # under SLURM: our preemption callback alone owns requeue
    strategy = build_strategy(cfg.strategy)
    if strategy == "auto" or type(strategy) is DDPStrategy:  # sharded strategies write directories of their own
        plugins.append(AtomicCheckpointIO())  # a kill mid-write never leaves a truncated last.ckpt
    trainer = instantiate(
        cfg.trainer, callbacks=callbacks, logger=loggers or False, strategy=strategy,
        enable_progress_bar=bar, **val_interval_in_batches(cfg.trainer),
        **({"plugins": plugins} if plugins else {}),
    )
    return datamodule, module, trainer


def write_run_metadata(cfg: DictConfig, output_dir: Path) -> None:
    """Rank 0 only: the resolved config and the command, so a run dir explains itself."""
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "config_resolved.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    (output_dir / "command.txt").write_text(shlex.join(sys.argv) + "\n")  # quoted: pasteable, and parseable


def fit(trainer: pl.Trainer, module: pl.LightningModule, datamodule: pl.LightningDataModule,
        ckpt: str | None) -> None:
    """`trainer.fit` with the preemption callback (if configured) owning SIGTERM/SIGUSR1/SIGUSR2 meanwhile."""
    preemption = find_preemption_callback(trainer.callbacks)
    if preemption is not None:
        preemption.arm()  # replaces submitit's handlers now, before data set-up (src/runtime/preemption.py)
    if ckpt:
        log.info("resuming from %s", ckpt)
    try:
        # weights_only: a checkpoint (maybe downloaded) is read without unpickling code; ours hold only tensors
        # and plain values (src/models/objective.py stores the RNG states that way).
        try:
            trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt, weights_only=True)
        except RuntimeError as err:
            if ckpt and "Error(s) in loading state_dict" in str(err):
                raise CheckpointMismatchError(mismatch_message(ckpt, err)) from None
            raise
        artifacts = next((c for c in trainer.callbacks if isinstance(c, RunArtifacts)), None)
        if ckpt and artifacts is not None and artifacts.final_validation_missing(trainer):
            # killed during the final validation, after the final checkpoint: the resumed fit had nothing to do, so
            # validate here and rewrite metrics.json, or it would report the previous validation's loss
            log.info("the run stopped during its final validation: validating step %d again", trainer.global_step)
            trainer.validate(module, datamodule=datamodule, verbose=False)
            artifacts.write(trainer, module)
    finally:
        if preemption is not None:
            preemption.disarm()  # Lightning's teardown re-installs whatever it found, i.e. our handler
