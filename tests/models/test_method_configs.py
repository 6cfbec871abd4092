"""Every conf/method config, built through `_base.yaml` and Hydra: the objective gets the shared settings without
restating them, `save_hyperparameters` records its own and the base's, and `load_from_checkpoint` rebuilds it."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from tests.helpers import ROOT
from tests.models.components.conftest import tiny_compact
from tests.models.grpo_helpers import CharTokenizer, share_of_a

BASE = {"kernel_impl", "compile", "loss_normalization", "nonfinite"}  # the settings _base.yaml gives every method
OWN = {"lm": "loss_impl", "mdlm": "mask_scope", "dpo": "token_weights", "simpo": "loss", "grpo": "scale_rewards",
       "rloo": "normalize_advantages"}


def method_cfg(name: str) -> dict:
    """conf/method/<name>.yaml with its `_base` defaults merged, as Hydra composes it (no run config needed)."""
    own = OmegaConf.load(ROOT / "conf" / "method" / f"{name}.yaml")
    assert list(own.pop("defaults")) == ["_base", "_self_"]
    cfg = OmegaConf.merge(OmegaConf.load(ROOT / "conf" / "method" / "_base.yaml"), own)
    cfg.scheduler = None  # total_steps interpolates trainer.max_steps
    if "mask_seed" in cfg:
        cfg.mask_seed = 0  # ${seed} in a run
    for key in ("reward", "downsample"):
        if key in cfg:
            cfg[key] = None
    return cfg


def build(name: str, cfg: dict) -> pl.LightningModule:
    tok = CharTokenizer()
    backbone = tiny_compact(vocab_size=16, causal=name != "mdlm")
    extra = {"reward": share_of_a} if name in ("grpo", "rloo") else {}
    if name == "mdlm":
        tok.mask_id = 15
    return instantiate(cfg, backbone=backbone, tokenizer=tok, **extra)


@pytest.mark.parametrize("name", sorted(OWN))
def test_a_method_config_builds_records_and_reloads_its_objective(name: str, tmp_path: Path) -> None:
    assert not BASE & set(OmegaConf.load(ROOT / "conf" / "method" / f"{name}.yaml")), "restated in the method"
    cfg = method_cfg(name)
    module = build(name, cfg)
    hp = dict(module.hparams)
    assert BASE | {OWN[name]} <= set(hp), sorted(hp)
    assert hp["nonfinite"] == "stop" and hp["loss_normalization"] == "step"
    path = tmp_path / "m.ckpt"
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": hp,
                "pytorch-lightning_version": pl.__version__}, path)
    fresh = build(name, cfg)  # other weights until the checkpoint is read
    extra = {"reward": share_of_a} if name in ("grpo", "rloo") else {}
    again = type(module).load_from_checkpoint(path, backbone=fresh.backbone, optimizer=instantiate(cfg.optimizer),
                                              tokenizer=fresh.tokenizer, weights_only=False, **extra)
    assert dict(again.hparams) == hp
    for key, value in module.state_dict().items():
        assert torch.equal(again.state_dict()[key], value), key
