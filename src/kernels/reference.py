"""Reference per-token log-prob / entropy: materialise the logits, the way a user's naive code would.

It exists as the correctness oracle for the fused paths (run it in float64 for the "truth", in the input dtype
for the error budget that a fused path must not exceed) and as the baseline every benchmark compares against.
Everything is computed in the input dtype on purpose: a bf16 user gets bf16 logits and a bf16 logsumexp.
"""

from __future__ import annotations

import torch
from torch import Tensor

from src.kernels.signature import implements


@implements
def reference_token_logprobs(
    hidden: Tensor,
    weight: Tensor,
    targets: Tensor,
    *,
    bias: Tensor | None = None,
    temperature: float = 1.0,
    ignore_index: int = -100,
    with_entropy: bool = False,
    entropy_grad: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """log softmax(h·Wᵀ + b)/T at each target, and optionally the entropy of that softmax (`TokenLogprobsFn`).

    hidden [N, d], weight [V, d], targets [N] (long), bias [V] or None. Returns logp [N] (and entropy [N]).
    Rows whose target is ``ignore_index`` give 0 and receive no gradient. Memory: O(N·V) (the logits and their
    softmax are materialised, and autograd keeps them for the backward).
    """
    valid = targets != ignore_index  # [N]
    safe_targets = torch.where(valid, targets, torch.zeros_like(targets))  # [N]
    logits = hidden @ weight.t()  # [N, V]
    if bias is not None:
        logits = logits + bias
    if temperature != 1.0:
        logits = logits / temperature
    lse = torch.logsumexp(logits, dim=-1)  # [N]
    target_logit = logits.gather(-1, safe_targets.unsqueeze(-1)).squeeze(-1)  # [N]
    zero = torch.zeros((), dtype=lse.dtype, device=lse.device)
    logp = torch.where(valid, target_logit - lse, zero)  # [N]
    if not with_entropy:
        return logp
    # Entropy is a statistic for most objectives (D³S token selection): only build its graph when asked.
    z = logits if entropy_grad else logits.detach()
    lse_h = lse if entropy_grad else lse.detach()
    probs = torch.softmax(z, dim=-1)  # [N, V]
    entropy = lse_h - (probs * z).sum(-1)  # [N]
    entropy = torch.where(valid, entropy, zero)
    return logp, entropy
