"""Direct preference optimisation losses: sequence DPO and its variants, and token-weighted DPO.

All take per-token log-probs of the policy and the reference on the response tokens of a chosen and a rejected
response and reduce them to one log-ratio per sequence, h = Σ_t w_t (log π(y_t) − log π_ref(y_t)) over chosen
minus the same over rejected. `loss_type` then turns h into a loss per pair:

| loss_type      | per-pair loss                                  | source                                 |
|----------------|------------------------------------------------|----------------------------------------|
| `sigmoid`      | −log σ(β h)                                    | DPO (Rafailov et al. 2023)             |
| `ipo`          | (h − 1/(2β))²                                  | IPO (Azar et al. 2023)                 |
| `hinge`        | max(0, 1 − β h)                                | SLiC (Zhao et al. 2023)                |
| `conservative` | −(1−ε) log σ(β h) − ε log σ(−β h)              | label smoothing, "conservative DPO"    |
| `robust`       | (−(1−ε) log σ(β h) + ε log σ(−β h)) / (1 − 2ε) | rDPO, noisy labels (Chowdhury 2024)    |

Naming: `conservative` is what some libraries call "cDPO". In tokensmith cDPO means critical-token DPO
(token weights from contrastive estimation, src/losses/critical_tokens.py): it is `sigmoid` with token weights.

Worked example (β = 0.1; chosen log-ratio 2.0, rejected −1.0, so h = 3.0 and βh = 0.3):
- sigmoid: log(1 + e^−0.3) = 0.554355; ∂/∂chosen = −β σ(−0.3) = −0.0425557, ∂/∂rejected = +0.0425557.
- ipo: (3 − 5)² = 4.0.   hinge: 1 − 0.3 = 0.7.
- conservative, ε = 0.1: 0.9·0.554355 + 0.1·log(1 + e^0.3) = 0.498919 + 0.085436 = 0.584355.
- robust, ε = 0.1: (0.498919 − 0.085436) / 0.8 = 0.516855.

Token-weighted example (β = 0.1): chosen logp [−1, −2], ref [−1.5, −1.5], weights [1, 1] → Σ w r = 0.5 − 0.5 = 0;
rejected logp [−1, −3], ref [−2, −2], weights [0.2, 1] → 0.2·1 + 1·(−1) = −0.8; h = 0.8, loss
= log(1 + e^−0.08) = 0.653946. With every weight 1 it is sequence DPO exactly (x·1 = x in floating point).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

DPO_LOSS_TYPES = ("sigmoid", "ipo", "hinge", "conservative", "robust")


def sequence_logratios(logp: Tensor, ref_logp: Tensor, mask: Tensor, weights: Tensor | None = None) -> Tensor:
    """Σ_t w_t (logp_t − ref_logp_t) over the tokens in `mask`, per sequence.

    logp, ref_logp: [B, T] per-token log-probs (policy differentiable, reference constant);
    mask: [B, T] bool or 0/1, the response tokens (and the end token) that enter the loss;
    weights: [B, T] constants (detached here: token weights never receive gradient), None = all 1.
    Returns [B].
    """
    r = (logp - ref_logp.detach()) * mask  # [B, T]
    if weights is not None:
        r = r * weights.detach()
    return r.sum(-1)


def dpo_pair_losses(chosen_logratio: Tensor, rejected_logratio: Tensor, beta: float, loss_type: str = "sigmoid",
                    label_smoothing: float = 0.0) -> Tensor:
    """Per-pair loss [B] from sequence log-ratios [B] (policy minus reference, chosen and rejected)."""
    if loss_type not in DPO_LOSS_TYPES:
        raise ValueError(f"method.loss_type={loss_type!r} is not one of {DPO_LOSS_TYPES}")
    if beta <= 0:
        raise ValueError(f"method.beta must be > 0, got {beta}")
    eps = float(label_smoothing)
    if loss_type in ("conservative", "robust") and not 0.0 <= eps < 0.5:
        raise ValueError(f"method.label_smoothing must be in [0, 0.5) for loss_type={loss_type}, got {eps}")
    h = chosen_logratio - rejected_logratio  # [B]
    if loss_type == "sigmoid":
        return -F.logsigmoid(beta * h)
    if loss_type == "ipo":
        return (h - 1.0 / (2.0 * beta)) ** 2
    if loss_type == "hinge":
        return torch.relu(1.0 - beta * h)
    if loss_type == "conservative":
        return -(1.0 - eps) * F.logsigmoid(beta * h) - eps * F.logsigmoid(-beta * h)
    return (-(1.0 - eps) * F.logsigmoid(beta * h) + eps * F.logsigmoid(-beta * h)) / (1.0 - 2.0 * eps)


def dpo_loss(
    chosen_logp: Tensor,
    rejected_logp: Tensor,
    chosen_ref_logp: Tensor,
    rejected_ref_logp: Tensor,
    chosen_mask: Tensor,
    rejected_mask: Tensor,
    *,
    beta: float = 0.1,
    loss_type: str = "sigmoid",
    label_smoothing: float = 0.0,
    chosen_weights: Tensor | None = None,
    rejected_weights: Tensor | None = None,
    reduction: str = "mean",
) -> tuple[Tensor, dict[str, Tensor]]:
    """(Token-weighted) DPO over a batch of pairs from per-token log-probs, all [B, T] (chosen and rejected may
    have different T). Token weights are constants; None = 1 (sequence DPO).

    Returns the mean (or, reduction="sum", the sum) of the per-pair losses and detached metrics per pair, averaged:
    `rewards/chosen` = β·chosen log-ratio, `rewards/rejected`, `rewards/margin`, `rewards/accuracy` (chosen reward
    above rejected), `logps/chosen`, `logps/rejected` (policy log-likelihood of each response, unweighted).
    """
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction={reduction!r} is not 'mean' or 'sum'")
    chosen_r = sequence_logratios(chosen_logp, chosen_ref_logp, chosen_mask, chosen_weights)  # [B]
    rejected_r = sequence_logratios(rejected_logp, rejected_ref_logp, rejected_mask, rejected_weights)  # [B]
    losses = dpo_pair_losses(chosen_r, rejected_r, beta, loss_type, label_smoothing)  # [B]
    loss = losses.mean() if reduction == "mean" else losses.sum()
    with torch.no_grad():
        rc, rr = beta * chosen_r, beta * rejected_r  # [B]
        metrics = {
            "rewards/chosen": rc.mean(),
            "rewards/rejected": rr.mean(),
            "rewards/margin": (rc - rr).mean(),
            "rewards/accuracy": (rc > rr).float().mean(),
            "logps/chosen": (chosen_logp * chosen_mask).sum(-1).mean(),
            "logps/rejected": (rejected_logp * rejected_mask).sum(-1).mean(),
        }
    return loss, {k: v.detach() for k, v in metrics.items()}
