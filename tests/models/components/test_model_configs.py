"""Every conf/model/*.yaml builds the backbone it promises (as train.py will instantiate it)."""

from __future__ import annotations

from pathlib import Path

import hydra
import torch
from omegaconf import OmegaConf

from src.models.components.hf_adapter import HFBackbone
from src.models.components.transformer import CompactTransformer

CONF = Path(__file__).parents[3] / "conf" / "model"


def load(name: str):
    return OmegaConf.load(CONF / f"{name}.yaml")


def first_line(name: str) -> str:
    return (CONF / f"{name}.yaml").read_text().splitlines()[0]


def test_tiny_builds_a_compact_transformer_once_vocab_is_known():
    cfg = load("tiny")
    assert first_line("tiny") == "# @package model"
    assert OmegaConf.is_missing(cfg, "vocab_size")  # train.py fills it from the tokenizer
    cfg.vocab_size = 40
    m = hydra.utils.instantiate(cfg)
    assert isinstance(m, CompactTransformer) and m.causal
    assert m(torch.randint(0, 40, (2, 8))).shape == (2, 8, 128)
    assert m.max_seq_len == 256 and len(m.layers) == 4


def test_hf_llama_tiny_builds_an_hf_backbone_from_a_config_dict():
    cfg = load("hf_llama_tiny")
    assert first_line("hf_llama_tiny") == "# @package model"
    assert OmegaConf.is_missing(cfg, "vocab_size")
    cfg.vocab_size = 40
    m = hydra.utils.instantiate(cfg)
    assert isinstance(m, HFBackbone) and m.vocab_size == 40 and m.hidden_size == 128
    assert m(torch.randint(0, 40, (2, 8))).shape == (2, 8, 128)


def test_hf_llama_tiny_with_lora_override():
    cfg = load("hf_llama_tiny")
    cfg.vocab_size = 40
    cfg.lora = {"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"]}  # as a CLI override would
    m = hydra.utils.instantiate(cfg)
    assert all("lora_" in n for n, p in m.named_parameters() if p.requires_grad)


def test_smollm2_config_sets_model_and_matching_tokenizer():
    cfg = load("smollm2_135m")
    assert first_line("smollm2_135m") == "# @package _global_"
    assert cfg.model._target_ == "src.models.components.hf_adapter.HFBackbone"
    assert cfg.model.model == cfg.data.tokenizer.pretrained == "smollm2-135m"
    assert cfg.model.vocab_size is None  # keep the pretrained vocabulary; train.py must not override it
