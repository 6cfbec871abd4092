"""Token-level cross-entropy from per-token log-probs (pretraining and SFT)."""

from __future__ import annotations

import torch


def token_cross_entropy(
    logp: torch.Tensor, labels: torch.Tensor, ignore_index: int = -100, reduction: str = "mean"
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Negative log-likelihood over the tokens that carry a label: their mean, or (reduction="sum") their sum,
    which src/models/token_normaliser.py divides by the whole optimizer step's label count.

    logp:   [N] log π(label_t); rows whose label is `ignore_index` hold 0 (the kernel's contract).
    labels: [N] targets (already shifted), `ignore_index` = no loss.

    Worked example: logp = [-1, -3, 0], labels = [5, 7, -100] -> loss = (1 + 3) / 2 = 2.0 (sum: 4.0), n_tokens = 2.
    An all-ignored batch gives loss 0 (not NaN) so a fully masked micro-batch cannot poison the step.
    """
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction={reduction!r} is not 'mean' or 'sum'")
    mask = labels != ignore_index  # [N]
    n_tokens = mask.sum()
    nll_sum = -(logp * mask).sum()  # differentiable; detached in the stats below
    loss = nll_sum / n_tokens.clamp(min=1) if reduction == "mean" else nll_sum
    return loss, {"nll_sum": nll_sum.detach(), "n_tokens": n_tokens.detach()}
