"""generate(): KV-cached decoding must equal recomputation, and batching (left padding) must not change outputs."""

from __future__ import annotations

import pytest
import torch

from src.models.components.generation import generate, next_token_logits, positions_from_mask, sample_token
from tests.models.components.conftest import VOCAB, tiny_compact, tiny_hf

PAD = 0
NEW = 8


def build(kind: str):
    # Larger init spreads the logits so greedy choices are not decided by float rounding between paths.
    if kind == "compact":
        return tiny_compact(init_std=0.2, n_kv_heads=2)
    return tiny_hf(initializer_range=0.2)


@pytest.fixture(params=["compact", "hf"])
def backbone(request):
    return build(request.param)


def left_padded_batch() -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    g = torch.Generator().manual_seed(5)
    prompts = [torch.randint(1, VOCAB, (n,), generator=g) for n in (6, 3, 1)]
    t = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), t), PAD)
    mask = torch.zeros(len(prompts), t, dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, t - len(p) :] = p
        mask[i, t - len(p) :] = 1
    return ids, mask, prompts


def greedy_without_cache(backbone, ids, mask, steps: int) -> torch.Tensor:
    """Reference: rerun the full (left-padded) sequence through forward() for every new token."""
    out = []
    with torch.no_grad():
        for _ in range(steps):
            h = backbone(ids, mask, positions_from_mask(mask))  # [B, T, d]
            token = next_token_logits(backbone, h[:, -1]).argmax(-1)  # [B]
            out.append(token)
            ids = torch.cat([ids, token[:, None]], dim=1)
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
    return torch.stack(out, dim=1)


def test_cached_generation_equals_uncached_recomputation(backbone):
    ids, mask, _ = left_padded_batch()
    cached = generate(backbone, ids, mask, max_new_tokens=NEW, pad_token_id=PAD)
    assert cached.shape == (3, NEW) and cached.dtype == torch.long
    torch.testing.assert_close(cached, greedy_without_cache(backbone, ids, mask, NEW))


def test_left_padding_gives_the_same_tokens_as_generating_each_row_alone(backbone):
    ids, mask, prompts = left_padded_batch()
    batched = generate(backbone, ids, mask, max_new_tokens=NEW, pad_token_id=PAD)
    for i, p in enumerate(prompts):
        alone = generate(
            backbone, p[None], torch.ones(1, len(p), dtype=torch.long), max_new_tokens=NEW, pad_token_id=PAD
        )
        torch.testing.assert_close(batched[i], alone[0])


def test_stop_tokens_pad_the_rest_and_stop_early(backbone):
    ids, mask, _ = left_padded_batch()
    free = generate(backbone, ids, mask, max_new_tokens=NEW, pad_token_id=PAD)
    stop = int(free[0, 2])
    out = generate(backbone, ids, mask, max_new_tokens=NEW, pad_token_id=PAD, stop_token_ids=[stop])
    for row_free, row in zip(free, out):
        hits = (row_free == stop).nonzero()
        end = int(hits[0]) + 1 if len(hits) else NEW
        torch.testing.assert_close(row[:end], row_free[:end])  # identical up to and including the stop token
        assert (row[end:] == PAD).all()

    calls = 0
    real = backbone.forward_cached

    def counting(*args):
        nonlocal calls
        calls += 1
        return real(*args)

    backbone.forward_cached = counting
    first = set(free[:, 0].tolist())  # every row stops at its first token
    out = generate(backbone, ids, mask, max_new_tokens=NEW, pad_token_id=PAD, stop_token_ids=first)
    assert calls == 1  # the prefill only: no decoding step after all rows stopped
    assert (out[:, 1:] == PAD).all()


def test_sampling_is_reproducible_and_filters_degenerate_to_greedy(backbone):
    ids, mask, _ = left_padded_batch()
    greedy = generate(backbone, ids, mask, max_new_tokens=NEW, pad_token_id=PAD)
    runs = [
        generate(
            backbone,
            ids,
            mask,
            max_new_tokens=NEW,
            pad_token_id=PAD,
            temperature=1.0,
            generator=torch.Generator().manual_seed(s),
        )
        for s in (1, 1, 2)
    ]
    torch.testing.assert_close(runs[0], runs[1])
    assert not torch.equal(runs[0], runs[2])
    top1 = generate(backbone, ids, mask, max_new_tokens=NEW, pad_token_id=PAD, temperature=1.0, top_k=1)
    tiny_p = generate(backbone, ids, mask, max_new_tokens=NEW, pad_token_id=PAD, temperature=1.0, top_p=1e-6)
    torch.testing.assert_close(top1, greedy)
    torch.testing.assert_close(tiny_p, greedy)


def test_generation_restores_training_mode(backbone):
    backbone.train()
    ids, mask, _ = left_padded_batch()
    generate(backbone, ids, mask, max_new_tokens=2, pad_token_id=PAD)
    assert backbone.training


def test_right_padded_prompts_are_rejected(backbone):
    with pytest.raises(ValueError, match="left-padded"):
        generate(
            backbone, torch.ones(1, 3, dtype=torch.long), torch.tensor([[1, 1, 0]]), max_new_tokens=2, pad_token_id=PAD
        )


def test_top_k_and_top_p_only_sample_inside_their_sets():
    logits = torch.tensor([[4.0, 3.0, 0.0, -1.0, -2.0]]).expand(2000, 5)
    g = torch.Generator().manual_seed(0)
    assert set(sample_token(logits, temperature=1.0, top_k=2, generator=g).tolist()) == {0, 1}
    # softmax mass of tokens 0, 1 is 0.70 + 0.26 = 0.96: top_p=0.9 keeps exactly those two
    assert set(sample_token(logits, temperature=1.0, top_p=0.9, generator=g).tolist()) == {0, 1}
    assert len(set(sample_token(logits, temperature=1.0, generator=g).tolist())) >= 4
