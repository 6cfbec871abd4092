"""Tiny backbones shared by the component tests (seconds on 2 CPU cores)."""

from __future__ import annotations

import pytest
import torch

from src.models.components.hf_adapter import HFBackbone
from src.models.components.transformer import CompactTransformer

VOCAB = 50


def ids(b: int, t: int, seed: int = 1) -> torch.Tensor:
    """[b, t] random token ids, reproducible by seed."""
    return torch.randint(0, VOCAB, (b, t), generator=torch.Generator().manual_seed(seed))


def tiny_compact(**overrides) -> CompactTransformer:
    kwargs = dict(vocab_size=VOCAB, d_model=32, n_layers=2, n_heads=4, max_seq_len=64)
    kwargs.update(overrides)
    torch.manual_seed(0)
    return CompactTransformer(**kwargs).eval()


def tiny_llama_config(**overrides) -> dict:
    cfg = dict(
        model_type="llama",
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=VOCAB,
        max_position_embeddings=64,
    )
    cfg.update(overrides)
    return cfg


def tiny_hf(**overrides) -> HFBackbone:
    torch.manual_seed(0)
    return HFBackbone(tiny_llama_config(**overrides)).eval()


@pytest.fixture
def compact() -> CompactTransformer:
    return tiny_compact()


@pytest.fixture
def hf() -> HFBackbone:
    return tiny_hf()
