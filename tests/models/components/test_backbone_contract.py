"""The Backbone contract (docs/contracts.md), checked once for every backbone: the compact transformer (causal and
bidirectional) and the Hugging Face adapter. Objectives rely on exactly these properties; backbone-specific
behaviour (GQA shapes, HF logits, LoRA, resizing) stays in each backbone's own test file."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn

from src.models.components.generation import generate
from tests.models.components.conftest import VOCAB, tiny_compact, tiny_hf

ATOL = 1e-5
BACKBONES: dict[str, tuple[Callable[[], nn.Module], bool]] = {  # name: (build, causal)
    "compact-causal": (lambda: tiny_compact(), True),
    "compact-bidirectional": (lambda: tiny_compact(causal=False), False),
    "hf-llama": (lambda: tiny_hf(), True),
}


@pytest.fixture(params=sorted(BACKBONES))
def backbone(request: pytest.FixtureRequest) -> nn.Module:
    build, causal = BACKBONES[request.param]
    model = build()
    assert model.causal is causal  # the flag objectives read to pick decoding or diffusion sampling
    return model


def ids(b: int, t: int, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, VOCAB, (b, t), generator=torch.Generator().manual_seed(seed))


def test_hidden_states_output_weight_and_properties(backbone: nn.Module) -> None:
    h = backbone(ids(3, 7))
    assert h.shape == (3, 7, 32)  # hidden states, never logits
    assert backbone.output_weight.shape == (VOCAB, 32)
    assert backbone.output_bias is None or backbone.output_bias.shape == (VOCAB,)
    assert (backbone.vocab_size, backbone.hidden_size) == (VOCAB, 32)


def test_future_tokens_influence_the_past_only_when_bidirectional(backbone: nn.Module) -> None:
    x = ids(1, 8)
    y = x.clone()
    y[0, -1] = (x[0, -1] + 1) % VOCAB  # change only the last token
    diff = (backbone(x) - backbone(y))[0, :-1].abs().max()
    assert (diff < ATOL) if backbone.causal else (diff > 1e-3)


def test_right_padding_does_not_change_real_positions(backbone: nn.Module) -> None:
    x = ids(1, 6)
    padded = torch.cat([x, ids(1, 4, seed=9)], dim=1)  # arbitrary tokens in the pad slots
    mask = torch.tensor([[1] * 6 + [0] * 4])
    torch.testing.assert_close(backbone(padded, mask)[:, :6], backbone(x), atol=ATOL, rtol=0)


def test_fully_padded_rows_are_finite(backbone: nn.Module) -> None:
    seg = torch.tensor([[0, 0, 0, 0, 0], [1, 1, 2, 0, 0]])  # row 0: nothing real (no key to attend to)
    assert torch.isfinite(backbone(ids(2, 5), (seg > 0).long())).all()
    assert torch.isfinite(backbone(ids(2, 5), (seg > 0).long(), segment_ids=seg)).all()


def test_segment_ids_equal_running_each_document_alone(backbone: nn.Module) -> None:
    a, b = ids(1, 5, seed=2), ids(1, 3, seed=3)
    packed = torch.cat([a, b, torch.zeros(1, 2, dtype=torch.long)], dim=1)  # [1, 10]: doc 1, doc 2, padding
    seg = torch.tensor([[1] * 5 + [2] * 3 + [0] * 2])
    pos = torch.tensor([[0, 1, 2, 3, 4, 0, 1, 2, 0, 0]])
    h = backbone(packed, attention_mask=(seg > 0).long(), position_ids=pos, segment_ids=seg)
    torch.testing.assert_close(h[:, :5], backbone(a), atol=ATOL, rtol=0)
    torch.testing.assert_close(h[:, 5:8], backbone(b), atol=ATOL, rtol=0)
    assert torch.isfinite(h).all()


def test_cached_decoding_equals_the_full_forward_or_is_refused(backbone: nn.Module) -> None:
    x = ids(2, 6)
    mask = torch.ones_like(x)
    pos = torch.arange(6).expand(2, 6)
    if not backbone.causal:
        with pytest.raises(ValueError, match="causal"):
            backbone.forward_cached(x, mask, pos, None)
        return
    h_full = backbone(x)  # [2, 6, d]
    h_prefix, cache = backbone.forward_cached(x[:, :4], mask[:, :4], pos[:, :4], None)
    h_next, _ = backbone.forward_cached(x[:, 4:], mask, pos[:, 4:], cache)
    torch.testing.assert_close(torch.cat([h_prefix, h_next], 1), h_full, atol=ATOL, rtol=0)
    new = generate(backbone, x, mask, max_new_tokens=3, pad_token_id=0)
    assert new.shape == (2, 3)
