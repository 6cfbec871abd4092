"""Token-level cross-entropy from per-token log-probs (pretraining and SFT)."""

from __future__ import annotations

import torch


def token_cross_entropy(
    logp: torch.Tensor, labels: torch.Tensor, ignore_index: int = -100
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Mean negative log-likelihood over the tokens that carry a label.

    logp:   [N] log π(label_t); rows whose label is `ignore_index` hold 0 (the kernel's contract).
    labels: [N] targets (already shifted), `ignore_index` = no loss.

    Worked example: logp = [-1, -3, 0], labels = [5, 7, -100] -> loss = (1 + 3) / 2 = 2.0, n_tokens = 2.
    An all-ignored batch gives loss 0 (not NaN) so a fully masked micro-batch cannot poison the step.
    """
    mask = labels != ignore_index  # [N]
    n_tokens = mask.sum()
    nll_sum = -(logp * mask).sum()
    loss = nll_sum / n_tokens.clamp(min=1)
    return loss, {"nll_sum": nll_sum.detach(), "n_tokens": n_tokens.detach()}
