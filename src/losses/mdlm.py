"""Masked-diffusion LM training (LLaDA form): the forward masking process and the SFT loss.

Forward process, per sequence b: t_b ~ U(0, 1), p_mask_b = (1 − ε)·t_b + ε (ε = 1e-3, so no sequence is left
unmasked in expectation), and every maskable position (the answer: response, end token and padding; never the
prompt) is replaced by [MASK] independently with probability p_mask_b. The model, bidirectional, predicts the
clean token at every masked position.

Loss (LLaDA's SFT form): L = (1/B) Σ_b Σ_{i masked in b} CE_i / (p_mask_b · L_ans_b), where L_ans_b counts ALL of b's
answer positions (response tokens, the end token and every padding token: padding is part of what the model must
generate on a fixed canvas). Dividing by p_mask makes the loss an unbiased estimate of the answer's negative ELBO
whatever t was drawn; dividing by L_ans weights every sequence equally.

The sum is returned with its sequence count, like `token_cross_entropy(reduction="sum")`, so the objective hands
(Σ_b loss_b, number of sequences) to `StepOutput` and the trained loss is the exact mean over every sequence of an
optimizer step (all micro-batches and ranks), not a mean of micro-batch means.

Worked example (per-token CE = −log p of the clean token at a masked position, from the fused kernel):
  b = 0: L_ans = 4, p_mask = 0.5,  masked CEs [1.0, 2.0] -> (1 + 2) / (0.5 · 4)  = 1.5
  b = 1: L_ans = 2, p_mask = 0.25, masked CEs [0.5]      -> 0.5 / (0.25 · 2)     = 1.0
  numerator = 2.5, denominator = 2 sequences, L = 1.25.
A sequence without answer positions (L_ans = 0) contributes nothing and is not counted.
"""

from __future__ import annotations

import torch
from torch import Tensor

MASK_EPS = 1e-3


def mask_probability(t: Tensor, eps: float = MASK_EPS) -> Tensor:
    """p_mask = (1 − eps)·t + eps, elementwise ([B] in, [B] out)."""
    return (1.0 - eps) * t + eps


def forward_mask(
    input_ids: Tensor,  # [B, T] clean tokens
    maskable: Tensor,  # [B, T] bool: answer positions (prompt and batch padding False)
    mask_id: int,
    *,
    eps: float = MASK_EPS,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Sample the forward process: returns (noisy_ids [B, T], masked [B, T] bool, p_mask [B]).

    One t per sequence, then one independent Bernoulli(p_mask) draw per position; only `maskable` positions can
    be masked. `generator` (on `input_ids`' device) makes the draw reproducible; None uses torch's global RNG.
    """
    b, t = input_ids.shape
    dev = input_ids.device
    p_mask = mask_probability(torch.rand(b, device=dev, generator=generator), eps)  # [B]
    u = torch.rand(b, t, device=dev, generator=generator)  # [B, T]
    masked = (u < p_mask[:, None]) & maskable.bool()  # [B, T]
    return input_ids.masked_fill(masked, mask_id), masked, p_mask


def mdlm_loss(
    logp: Tensor,  # [B, T] log p(clean token) at masked positions (0 elsewhere is fine: the mask decides)
    masked: Tensor,  # [B, T] bool, positions replaced by [MASK]
    p_mask: Tensor,  # [B] masking probability each sequence was drawn with
    answer_len: Tensor,  # [B] L_ans: answer positions incl. end token and padding
    reduction: str = "sum",
) -> tuple[Tensor, dict[str, Tensor]]:
    """The LLaDA SFT loss: Σ_b (or its mean over sequences) of Σ_{i masked} −logp_i / (p_mask_b · L_ans_b).

    Returns (loss, stats); stats hold the detached `n_sequences` (the denominator: sequences with L_ans > 0),
    `n_masked` and `masked_nll_sum` (the plain CE summed over masked tokens, for logging).
    """
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction={reduction!r} is not 'mean' or 'sum'")
    masked = masked.bool()
    nll = -(logp * masked).sum(dim=1)  # [B] Σ CE over masked positions
    has_answer = answer_len > 0  # [B]
    scale = (p_mask * answer_len.to(p_mask.dtype)).clamp(min=1e-12)  # [B]
    per_seq = torch.where(has_answer, nll / scale, torch.zeros_like(nll))  # [B]
    total = per_seq.sum()
    n_seq = has_answer.sum()
    loss = total / n_seq.clamp(min=1) if reduction == "mean" else total
    return loss, {
        "n_sequences": n_seq.detach(),
        "n_masked": masked.sum().detach(),
        "masked_nll_sum": nll.sum().detach(),
    }
