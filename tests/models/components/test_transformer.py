"""CompactTransformer: what is specific to it (final norm, SDPA fast path, GQA, tying, FLOPs, checkpointing).

The Backbone contract it shares with the HF adapter (shapes, causality, padding, packed rows, KV cache) is in
test_backbone_contract.py."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from src.models.components import transformer as transformer_mod
from tests.models.components.conftest import VOCAB, ids, tiny_compact

ATOL = 1e-5


def test_grouped_query_attention_has_fewer_kv_heads():
    m = tiny_compact(n_kv_heads=2)
    assert m.layers[0].attn.k_proj.weight.shape == (2 * 8, 32)  # GQA: 2 kv heads of dim 8
    assert m.layers[0].attn.q_proj.weight.shape == (4 * 8, 32)
    assert m(ids(3, 7)).shape == (3, 7, 32)


def test_final_norm_is_applied():
    h = tiny_compact(norm_eps=1e-12)(ids(2, 5))
    rms = h.pow(2).mean(-1).sqrt()  # RMSNorm weight starts at 1 -> unit RMS per position
    torch.testing.assert_close(rms, torch.ones_like(rms), atol=1e-3, rtol=0)


def test_unpadded_batch_takes_sdpa_is_causal_fast_path(monkeypatch):
    calls = []
    real = F.scaled_dot_product_attention

    def spy(q, k, v, attn_mask=None, is_causal=False, **kw):
        calls.append((attn_mask, is_causal))
        return real(q, k, v, attn_mask=attn_mask, is_causal=is_causal, **kw)

    monkeypatch.setattr(transformer_mod.F, "scaled_dot_product_attention", spy)
    m = tiny_compact()
    x = ids(2, 6)
    h_none = m(x)
    h_ones = m(x, torch.ones(2, 6, dtype=torch.long))
    assert calls and all(mask is None and is_causal for mask, is_causal in calls)
    torch.testing.assert_close(h_none, h_ones)


def test_tied_embeddings_share_storage_and_gradient():
    tied = tiny_compact(tie_embeddings=True)
    assert tied.output_weight is tied.embed.weight
    untied = tiny_compact()
    assert untied.output_weight.data_ptr() != untied.embed.weight.data_ptr()
    assert tied.num_params() == untied.num_params() - VOCAB * 32  # counted once
    # a loss through the output projection alone trains the (shared) input embedding
    tied.train()
    h = tied(ids(2, 4))
    (h @ tied.output_weight.T).logsumexp(-1).sum().backward()
    assert tied.embed.weight.grad is not None and tied.embed.weight.grad.abs().sum() > 0


def test_flops_per_token_matches_the_standard_formula():
    m = tiny_compact(tie_embeddings=True)  # d=32, L=2, V=50, ffn=128 (8/3·32 -> 64·ceil(85/64))
    per_layer = 4 * 32 * 32 + 3 * 32 * 128 + 2 * 32  # attn projections + SwiGLU + 2 norms
    n = 2 * per_layer + 32 + VOCAB * 32  # layers + final norm + output projection (tied, counted once)
    assert m.num_params() == n
    assert m.flops_per_token(64) == 6 * n + 12 * 2 * 32 * 64


def test_gradient_checkpointing_gives_identical_gradients():
    x = ids(2, 6)
    grads = []
    for ckpt in (False, True):
        m = tiny_compact(gradient_checkpointing=ckpt).train()
        m(x).pow(2).sum().backward()
        grads.append(m.layers[0].attn.q_proj.weight.grad)
    torch.testing.assert_close(grads[0], grads[1])


def test_rejects_sequences_longer_than_max_seq_len():
    with pytest.raises(ValueError, match="max_seq_len"):
        tiny_compact(max_seq_len=4)(ids(1, 5))


def test_tiny_model_overfits_a_fixed_batch():
    """The whole stack learns: next-token loss on one batch drops from ~ln(V) to near zero in 50 steps."""
    torch.manual_seed(0)
    m = tiny_compact(d_model=64).train()
    x = ids(4, 17)
    inputs, labels = x[:, :-1], x[:, 1:]  # labels already shifted, as in the batch contract
    opt = torch.optim.AdamW(m.parameters(), lr=3e-3)
    losses = []
    for _ in range(50):
        h = m(inputs)  # [B, T, d]
        loss = F.cross_entropy((h @ m.output_weight.T).flatten(0, 1), labels.flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[0] > 3.0  # ~ln(50) = 3.9 at init
    assert losses[-1] < 0.2 * losses[0], losses[::10]
