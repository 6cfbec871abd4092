"""GRPO: group-relative advantages, the clipped surrogate, the k3 KL estimator and the four loss normalisers.

Per prompt, G rollouts get rewards r; the advantage of rollout i is its reward relative to its group,
    A_i = (r_i − mean_group(r)) / (scale + 1e-6),
with scale = the group's std (`scale_rewards="group"`), the whole batch's std (`"batch"`), or 1 (`"none"`, Dr. GRPO).
A group whose rewards are all equal gets A = 0 (nothing to learn from it); a NaN reward must be handled before
(the objective scores it as configured), and is refused here.

Per token, with ρ = exp(log π_θ − log π_old):
    loss_t = −min(ρ·A, clip(ρ, 1 − ε_low, 1 + ε_high)·A) + β·KL_t,   KL_t = e^(ref − logp) − (ref − logp) − 1 (k3).

The normalisers turn per-token losses into one number, as TRL defines them; each is returned as a numerator and a
denominator so the step normaliser (src/models/token_normaliser.py) can sum both over every micro-batch and rank
of the generation batch and divide once:
| loss_type | loss                                                     | numerator              | denominator       |
|-----------|----------------------------------------------------------|------------------------|-------------------|
| `grpo`    | mean over sequences of each sequence's token mean        | Σ_seq Σ_t l / n_seq    | sequences         |
| `bnpo`    | token mean of each micro-batch (then averaged)           | Σ l / n_tokens(local)  | 1 per micro-batch |
| `dr_grpo` | Σ l / (sequences · max_completion_length)                | Σ l / L_max            | sequences         |
| `dapo`    | token mean over the whole generation batch, all ranks    | Σ l                    | tokens            |

Worked example (ε = 0.2, β = 0): two sequences, A = [1, −1], per-token ρ = [[1.5, 1.0], [0.5, 1.0 (masked)]].
Sequence 1: −min(1.5·1, 1.2·1) = −1.2 and −min(1, 1) = −1. Sequence 2: −min(0.5·(−1), 0.8·(−1)) = 0.8 (the
clipped term is the smaller); its 2nd token is masked. Token losses [−1.2, −1], [0.8]:
grpo = mean(−1.1, 0.8) = −0.15; bnpo = dapo = (−1.2 − 1 + 0.8) / 3 = −0.4667; dr_grpo (L_max = 2) = −1.4 / 4 = −0.35.
"""

from __future__ import annotations

import torch
from torch import Tensor

SCALE_REWARDS = ("group", "batch", "none")
GRPO_LOSS_TYPES = ("grpo", "bnpo", "dr_grpo", "dapo")


def group_advantages(rewards: Tensor, group_size: int, scale_rewards: str = "group", eps: float = 1e-6,
                     valid: Tensor | None = None) -> Tensor:
    """A [B·G] from rewards [B·G] laid out group by group (rollouts of one prompt are contiguous).

    Worked example: rewards [1, 0, 0, 1 | 1, 1, 1, 1], G = 4, scale "group": group 1 has mean 0.5 and (unbiased)
    std 0.57735, so A = ±0.866; group 2 is all equal: A = 0 (its std is 0, the numerator 0).

    valid [B·G] bool (optional): rollouts whose reward failed and were dropped; they get A = 0 and leave their
    group's mean and std (their reward value, NaN included, is ignored). Example: rewards [1, NaN, 0, 0], valid
    [1, 0, 1, 1], G = 4: the group is {1, 0, 0}, mean 1/3, std 0.57735, A = [1.155, 0, −0.577, −0.577].
    """
    if scale_rewards not in SCALE_REWARDS:
        raise ValueError(f"method.scale_rewards={scale_rewards!r} is not one of {SCALE_REWARDS}")
    if rewards.numel() % group_size:
        raise ValueError(f"{rewards.numel()} rewards do not split into groups of {group_size}")
    if valid is not None:
        return _masked_group_advantages(rewards, valid.bool(), group_size, scale_rewards, eps)
    if not torch.isfinite(rewards).all():
        raise ValueError("rewards must be finite; score failed rollouts before computing advantages")
    grouped = rewards.float().view(-1, group_size)  # [B, G]
    centred = grouped - grouped.mean(-1, keepdim=True)  # [B, G]
    if scale_rewards == "group":
        scale = grouped.std(-1, keepdim=True) if group_size > 1 else torch.ones_like(grouped[:, :1])
    elif scale_rewards == "batch":
        scale = rewards.float().std() if rewards.numel() > 1 else torch.ones(())
    else:
        scale = torch.ones(())
    return (centred / (scale + eps)).flatten()


def _masked_group_advantages(rewards: Tensor, valid: Tensor, group_size: int, scale_rewards: str,
                             eps: float) -> Tensor:
    """`group_advantages` over the valid rollouts only (unbiased std; a group with < 2 valid rollouts has scale 1)."""
    v = valid.view(-1, group_size)  # [B, G]
    r = torch.where(valid, rewards.float(), torch.zeros((), device=rewards.device)).view(-1, group_size)  # [B, G]
    if not torch.isfinite(r).all():
        raise ValueError("rewards of valid rollouts must be finite")
    vf = v.float()
    n = vf.sum(-1, keepdim=True)  # [B, 1]
    mean = (r * vf).sum(-1, keepdim=True) / n.clamp(min=1)
    centred = (r - mean) * vf  # [B, G], 0 on invalid rollouts
    if scale_rewards == "group":
        var = (centred**2).sum(-1, keepdim=True) / (n - 1).clamp(min=1)
        scale = torch.where(n > 1, var.sqrt(), torch.ones_like(var))
    elif scale_rewards == "batch":
        flat = rewards.float()[valid]
        scale = flat.std() if flat.numel() > 1 else torch.ones((), device=rewards.device)
    else:
        scale = torch.ones((), device=rewards.device)
    return (centred / (scale + eps)).flatten()


def k3_kl(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """Per-token k3 estimate of KL(π_θ ‖ π_ref): e^(ref − logp) − (ref − logp) − 1 ≥ 0 (0 where they agree)."""
    d = ref_logp - logp
    return torch.exp(d) - d - 1


def clipped_surrogate(logp: Tensor, old_logp: Tensor, advantages: Tensor, eps_low: float = 0.2,
                      eps_high: float = 0.2) -> Tensor:
    """Per-token −min(ρA, clip(ρ, 1−ε_low, 1+ε_high)A); logp/old_logp [N, T], advantages [N]. Returns [N, T]."""
    ratio = torch.exp(logp - old_logp.detach())  # [N, T]
    a = advantages.detach()[:, None]  # [N, 1]
    return -torch.minimum(ratio * a, ratio.clamp(1 - eps_low, 1 + eps_high) * a)


def normalise(per_token: Tensor, mask: Tensor, loss_type: str,
              max_completion_length: int | None = None) -> tuple[Tensor, Tensor]:
    """(numerator, denominator) of a GRPO loss from per-token losses [N, T] and the completion mask [N, T]; see the
    module docstring. The loss of one micro-batch alone is numerator / denominator."""
    if loss_type not in GRPO_LOSS_TYPES:
        raise ValueError(f"method.loss_type={loss_type!r} is not one of {GRPO_LOSS_TYPES}")
    m = mask.to(per_token.dtype)
    masked = per_token * m  # [N, T]
    n_seq = torch.tensor(float(per_token.shape[0]), device=per_token.device)
    if loss_type == "grpo":
        return (masked.sum(-1) / m.sum(-1).clamp(min=1)).sum(), n_seq
    if loss_type == "bnpo":
        return masked.sum() / m.sum().clamp(min=1), torch.ones((), device=per_token.device)
    if loss_type == "dr_grpo":
        length = max_completion_length or per_token.shape[1]
        return masked.sum() / length, n_seq
    return masked.sum(), m.sum()
