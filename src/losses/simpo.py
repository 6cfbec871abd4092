"""SimPO (Meng et al. 2024): reference-free preference optimisation on length-averaged log-probs with a margin.

Per pair, with the policy's *average* log-prob over each response's tokens (the end token included),
    Δ = (1/|y_w|) Σ_t log π(y_w,t) − (1/|y_l|) Σ_t log π(y_l,t),
    loss = −(1 − ε) log σ(β Δ − γ) − ε log σ(−(β Δ − γ)),
β the reward scale and γ the target margin (ε: label smoothing, 0 in the paper). No reference model.

TRL's convention (its CPO trainer with `loss_type="simpo"`): `simpo_gamma` is this γ, the margin in the sigmoid's
argument; TRL subtracts γ/β from Δ and multiplies by β, which is the same number. TRL's CPO adds `cpo_alpha` × the
chosen response's NLL by default (1.0); SimPO itself is `cpo_alpha=0`, which is what this computes.

Worked example (β = 2, γ = 1): average log-probs −1.0 (chosen) and −1.5 (rejected): Δ = 0.5, β Δ − γ = 0,
loss = log 2 = 0.693147. With Δ = 1.0: β Δ − γ = 1, loss = log(1 + e^−1) = 0.313262; with ε = 0.1 also
+0.1·(log(1 + e^1) − log(1 + e^−1)) = 0.313262 + 0.1 = 0.413262 (log σ(x) − log σ(−x) = x).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def simpo_pair_losses(chosen_avg_logp: Tensor, rejected_avg_logp: Tensor, beta: float = 2.0, gamma: float = 1.0,
                      label_smoothing: float = 0.0) -> Tensor:
    """Per-pair loss [B] from the average log-probs of the chosen and rejected responses [B] (module docstring)."""
    if beta <= 0:
        raise ValueError(f"method.loss.beta must be > 0, got {beta}")
    if not 0.0 <= label_smoothing < 0.5:
        raise ValueError(f"method.loss.label_smoothing must be in [0, 0.5), got {label_smoothing}")
    z = beta * (chosen_avg_logp - rejected_avg_logp) - gamma  # [B]
    return -(1.0 - label_smoothing) * F.logsigmoid(z) - label_smoothing * F.logsigmoid(-z)
