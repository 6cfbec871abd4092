"""Two-stage recipes from one command: pretrain, then fine-tune the same weights (`finetune:` config node).

`finetune: {data: {...}, trainer: {...}, method: {...}, callbacks: {...}}` holds overrides merged onto the run's
own config for the second stage (e.g. `data.stage: finetune`, `data.stochastok.p: 0`, fewer steps, another lr).
A node whose `_target_` differs from the first stage's replaces it whole (SFT, then `method=grpo`: the
experiment puts the method config there with `- /method@finetune.method: grpo` in its defaults).
A `curriculum=` applies to both stages unless the config sets `curriculum_stage: finetune` (grpo/arith: the SFT
stage has no skills, the GRPO stage's prompts do; src/runtime/build.py, `curriculum_applies`).
The second stage builds its components exactly like the first (`build_components`), copies the pretrained
backbone weights in, runs in `<run dir>/finetune/`, and its metrics are merged into the run's metrics.json
with a `finetune/` prefix, so a sweep's table reads one file per job.

Resume: when the run resumes (a requeued or preempted job, or `ckpt_path=last`), stage 1 continues from its
checkpoint — a finished stage 1 restores its final weights and trains nothing — and stage 2 continues from
`<run dir>/finetune/checkpoints/last.ckpt` if it had started; a preemption record in either stage's dir makes a
plain relaunch resume (src/runtime/preemption.py). `src/runtime/run.py` runs stage 1 and passes whether it resumed.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from omegaconf import DictConfig, OmegaConf

from src.callbacks.skills.evaluation import curriculum_config_problem
from src.data.cache import atomic_write_text
from src.models.components.compact_lora import TOKEN_KEYS
from src.runtime.build import build_components, check_data_format, curriculum_applies, fit, write_run_metadata
from src.runtime.checkpoints import ensure_fresh_run_dir, is_checkpoint
from src.runtime.errors import ConfigError

log = logging.getLogger(__name__)
STAGE_KEYS = ("data", "trainer", "method", "callbacks", "model")
FINETUNE_DIR = "finetune"  # the second stage's run dir, inside the run's


def finetune_config(cfg: DictConfig, output_dir: Path) -> DictConfig:
    """The second stage's config: the run's config with `finetune.*` merged in and its own output dir."""
    ft = cfg.finetune
    unknown = set(ft) - set(STAGE_KEYS)
    if unknown:
        raise ValueError(f"finetune has unknown keys {sorted(unknown)}; allowed: {list(STAGE_KEYS)}")
    base = OmegaConf.to_container(cfg, resolve=False)
    base["finetune"] = None
    for key in STAGE_KEYS:
        # A stage with another `_target_` (e.g. SFT, then method=grpo on prompt data) replaces that node: merging
        # would hand the new class the old one's arguments.
        new_target = (ft.get(key) or {}).get("_target_") if OmegaConf.is_dict(ft.get(key)) else None
        if new_target and isinstance(base.get(key), dict) and base[key].get("_target_") != new_target:
            base[key] = None
    merged = OmegaConf.merge(OmegaConf.create(base), {k: ft[k] for k in ft})
    merged.paths.output_dir = str(output_dir / FINETUNE_DIR)
    return merged


TOKEN_NAMES = ("pads", "eos", "mask", "keep")  # what model.lora's token keys may name (src/runtime/build.py)


def preflight(cfg: DictConfig, output_dir: Path) -> None:
    """Refuse, before stage 1 trains, what stage 2 would refuse only after it (hours of stage 1 at scale): unknown
    `finetune` keys, an objective on a data format it cannot train, a curriculum its data cannot drive, a LoRA token
    name no tokenizer has. ConfigError."""
    try:
        ft = finetune_config(cfg, output_dir)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    try:
        check_data_format(ft)
    except ConfigError as err:
        raise ConfigError(f"the fine-tuning stage: {err}") from None
    if curriculum_applies(ft):
        problem = curriculum_config_problem(ft.get("data"), ft.curriculum.get("callback"))
        if problem:
            raise ConfigError(f"the fine-tuning stage: {problem}")
    lora = (ft.get("model") or {}).get("lora") or {}
    for key in TOKEN_KEYS:
        value = lora.get(key)
        if isinstance(value, str) and value not in TOKEN_NAMES:
            raise ConfigError(f"model.lora.{key}={value!r} (fine-tuning stage): not a token name; use a list of "
                              f"ids or one of {list(TOKEN_NAMES[:-1])}")


def run_finetune(cfg: DictConfig, pretrained: pl.LightningModule, output_dir: Path,
                 resumed: bool = False) -> dict[str, Any]:
    """Fine-tune `pretrained`'s backbone under `cfg.finetune`; returns the merged metrics. `resumed`: stage 1
    continued from a checkpoint, so stage 2 continues from its own last checkpoint when it has one."""
    ft_cfg = finetune_config(cfg, output_dir)
    datamodule, module, trainer = build_components(ft_cfg)
    own = Path(ft_cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    ckpt = str(own) if resumed and is_checkpoint(own) else None
    if ckpt is None:
        ensure_fresh_run_dir(ft_cfg.paths.output_dir)
    # also on resume: a frozen reference copy is the pretrained weights and checkpoints leave it out (checked by
    # fingerprint when the checkpoint restores the fine-tuned policy over this)
    module.load_backbone_weights(pretrained.backbone.state_dict())
    if trainer.global_rank == 0:  # the stage's own config, so its dir is a run dir (python -m src.export)
        write_run_metadata(ft_cfg, Path(ft_cfg.paths.output_dir))
    log.info("fine-tuning stage -> %s", ft_cfg.paths.output_dir)
    fit(trainer, module, datamodule, ckpt)
    pre_file, ft_file = output_dir / "metrics.json", Path(ft_cfg.paths.output_dir) / "metrics.json"
    metrics = json.loads(pre_file.read_text()) if pre_file.is_file() else {}
    if ft_file.is_file():
        metrics.update({f"finetune/{k}": v for k, v in json.loads(ft_file.read_text()).items()})
    if trainer.global_rank == 0:
        atomic_write_text(pre_file, json.dumps(metrics, indent=2) + "\n")
    return metrics
