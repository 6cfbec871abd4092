"""Critical-token scores by contrastive estimation (the token weights of critical-token DPO, "cDPO" in tokensmith).

Two models fine-tuned from the same base, one on correct solutions (pos) and one on wrong ones (neg), score each
token of a response:

    s_t = softmax_v((1 + b)·z_pos,t − b·z_neg,t)[y_t],   z = logits at position t (fp32), b = 1 by default.

A low score on a wrong solution marks a token the negative model prefers far more than the positive one: a
critical token. Critical-token DPO then weights the rejected response's log-ratios by 1 − s_t.

Why no [T, V] logits: both models' logits combine linearly, so the combined logits are one matrix product over a
concatenated hidden dimension,
    (1 + b)·h_pos W_posᵀ − b·h_neg W_negᵀ = [(1 + b)·h_pos, −b·h_neg] · [W_pos, W_neg]ᵀ   ([N, 2d] x [2d, V]),
which the fused kernel turns into log s_t chunk by chunk (src/kernels). When both models share the output layer
(LoRA adapters that leave the head alone), it is one [N, d] product: ((1 + b)·h_pos − b·h_neg) Wᵀ.

Scores are taken on exactly the token ids the DPO loss trains on (the labels of the pair's batch), so weights and
log-ratios cannot drift apart (the reference code re-tokenised text and aligned by position).

Worked example (V = 3, b = 1): z_pos = [2, 0, 0], z_neg = [0, 2, 0] → combined 2·z_pos − z_neg = [4, −2, 0];
softmax = [e⁴, e⁻², 1] / 55.7335 = [0.979629, 0.002428, 0.017942]: token 1 (the one only the negative model
likes) scores 0.0024, a critical token.
"""

from __future__ import annotations

import torch
from torch import Tensor

from src.kernels import token_logprobs


@torch.no_grad()
def contrastive_token_scores(
    hidden_pos: Tensor,
    hidden_neg: Tensor,
    weight_pos: Tensor,
    weight_neg: Tensor,
    targets: Tensor,
    *,
    b: float = 1.0,
    bias_pos: Tensor | None = None,
    bias_neg: Tensor | None = None,
    ignore_index: int = -100,
    impl: str | None = None,
) -> Tensor:
    """s_t = softmax((1 + b)·z_pos − b·z_neg)[y_t] for every row; 0 where the target is `ignore_index`.

    hidden_pos, hidden_neg: [..., d] final hidden states of the two models on the same tokens; weight_*: [V, d];
    targets: [...] token ids. Computed in fp32 without materialising [N, V] logits. Returns [...] in [0, 1].
    """
    if hidden_pos.shape != hidden_neg.shape:
        raise ValueError(f"hidden states disagree: {tuple(hidden_pos.shape)} vs {tuple(hidden_neg.shape)}")
    if b < 0:
        raise ValueError(f"contrastive strength b must be >= 0, got {b}")
    hp, hn = hidden_pos.float(), hidden_neg.float()
    wp, wn = weight_pos.float(), weight_neg.float()
    bias = None
    if bias_pos is not None or bias_neg is not None:
        zero = torch.zeros(wp.shape[0], device=wp.device)
        bias = (1 + b) * (zero if bias_pos is None else bias_pos.float()) - b * (
            zero if bias_neg is None else bias_neg.float())  # [V]
    if wp.data_ptr() == wn.data_ptr() or torch.equal(wp, wn):  # a shared head: one [N, d] product
        hidden, weight = (1 + b) * hp - b * hn, wp
    else:
        hidden = torch.cat([(1 + b) * hp, -b * hn], dim=-1)  # [..., 2d]
        weight = torch.cat([wp, wn], dim=-1)  # [V, 2d]
    logp = token_logprobs(hidden, weight, targets, bias=bias, ignore_index=ignore_index, impl=impl)  # [...]
    scores = logp.exp()
    return torch.where(targets == ignore_index, torch.zeros_like(scores), scores)
