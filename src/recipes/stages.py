"""The stages of a multi-stage recipe: each writes its artifact into its own directory of the recipe's run dir, a
rerun skips the finished ones and continues the interrupted one.

A stage is finished when its artifact exists; artifacts are written atomically and last, so a kill leaves either
no artifact (the stage runs again, continuing from whatever it checkpointed) or a complete one (skipped). Training
stages are ordinary runs (`build_components` + `fit`) in `<run dir>/<stage>/`: their artifact is `final.pt`, the
backbone's weights after training (plain tensors, read with `weights_only=True`); an interrupted one resumes from
its own `checkpoints/last.ckpt`.

Stage configs: the recipe's own config with the stage's overrides merged in. A node of the overrides that names a
`_target_` (a whole `data:` or `method:` block) replaces the run's node instead of merging into it, so a stage can
switch from SFT data to preference pairs without inheriting keys the new class does not take.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from src.data.cache import atomic_write_bytes, atomic_write_text
from src.runtime.build import build_components, fit
from src.runtime.checkpoints import is_checkpoint

log = logging.getLogger(__name__)
FINAL = "final.pt"  # a training stage's artifact: the backbone's state dict


def stage_config(cfg: DictConfig, overrides: Mapping[str, Any] | DictConfig, output_dir: Path,
                 smoke: Mapping[str, Any] | None = None) -> DictConfig:
    """`cfg` with `overrides` applied (nodes with `_target_` replace, others merge), run in `output_dir`.
    `smoke`: trainer settings forced last (debug=smoke makes every stage a few steps)."""
    base = OmegaConf.to_container(cfg, resolve=False)
    base.pop("recipe", None)
    merged = OmegaConf.create(base)
    over = OmegaConf.to_container(OmegaConf.create(dict(overrides)), resolve=False) if overrides else {}
    for key, node in over.items():
        if isinstance(node, dict) and "_target_" in node:
            merged[key] = node
        else:
            merged = OmegaConf.merge(merged, {key: node})
    if smoke:
        merged = OmegaConf.merge(merged, {"trainer": dict(smoke)})
    merged.paths.output_dir = str(output_dir)
    return merged


def build_backbone(cfg: DictConfig) -> tuple[Any, torch.nn.Module]:
    """(tokenizer, backbone) of a stage config, without a trainer: for the stages that only run a model."""
    from hydra.utils import instantiate

    tok = instantiate(cfg.data, _convert_="all").tokenizer
    sized = {"vocab_size": tok.vocab_size} if OmegaConf.is_missing(cfg.model, "vocab_size") else {}
    return tok, instantiate(cfg.model, **sized)


def save_weights(module: torch.nn.Module, path: Path) -> None:
    """The backbone's weights, atomically (the stage's artifact; written after everything else of the stage)."""
    import io

    buf = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in module.state_dict().items()}, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)


def stage_metrics(stage_dir: Path) -> dict[str, Any]:
    f = stage_dir / "metrics.json"
    return json.loads(f.read_text()) if f.is_file() else {}


def train_stage(cfg: DictConfig, name: str, init: Path | None) -> tuple[Path, dict[str, Any]]:
    """Run (or skip, or continue) the training stage whose config is `cfg` (from `stage_config`); its backbone
    starts from the weights in `init` (None: the config's own initialisation). Returns (final.pt, metrics)."""
    out = Path(cfg.paths.output_dir)
    final = out / FINAL
    if final.is_file():
        log.info("stage %s: done (%s), skipped", name, final)
        return final, stage_metrics(out)
    datamodule, module, trainer = build_components(cfg)
    last = out / "checkpoints" / "last.ckpt"
    ckpt = str(last) if is_checkpoint(last) else None
    if init is not None:  # the reference copy too (DPO stages); on resume the checkpoint then restores the policy,
        module.load_backbone_weights(load_weights(init))  # and the reference it left out is this start (checked)
    if trainer.global_rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "config_resolved.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    log.info("stage %s: %s -> %s", name, "continuing from " + ckpt if ckpt else "training", out)
    fit(trainer, module, datamodule, ckpt)
    if trainer.global_rank == 0:
        save_weights(module.backbone, final)
    return final, stage_metrics(out)
