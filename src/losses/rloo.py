"""RLOO (REINFORCE leave-one-out, Ahmadian et al. 2024): the leave-one-out baseline and the sequence-level loss.

RLOO treats a whole completion as one action. Per prompt, G rollouts get rewards r; with `beta` > 0 the reward
first pays for the distance to the reference, summed over the completion (TRL's convention: the k1 estimator at
the sampling policy's log-probs, computed once per generation batch):
    r'_i = r_i − β · Σ_t (log π_old(y_t) − log π_ref(y_t)).
Each rollout's baseline is the mean reward of the *other* G − 1 rollouts of its prompt:
    A_i = r'_i − (Σ_j r'_j − r'_i) / (G − 1)   ( = G/(G − 1) · (r'_i − mean(r')) ).
`normalize_advantages` then optionally standardises A over the generation batch: (A − mean) / (std + 1e-4),
std unbiased, as TRL does.

The loss is PPO's clipped surrogate on the *sequence* ratio ρ_i = exp(Σ_t log π_θ − Σ_t log π_old) over the
completion's (kept) tokens, averaged over sequences:
    loss = mean_i −min(ρ_i·A_i, clip(ρ_i, 1 − ε_low, 1 + ε_high)·A_i).
With one PPO epoch ρ = 1 and this is REINFORCE with the leave-one-out baseline (TRL's RLOOTrainer: "REINFORCE
/ A2C is a special case of PPO with one epoch and one mini-batch").

Dropped rollouts (a failed reward with `on_error=drop`) take no part: a baseline averages the group's valid
rollouts only, an invalid rollout gets A = 0, and a group with fewer than two valid rollouts has A = 0.

Worked example (G = 4, β = 0): r = [1, 0, 0, 1]: Σ = 2, baselines (2 − r)/3 = [1/3, 2/3, 2/3, 1/3],
A = [2/3, −2/3, −2/3, 2/3] (= 4/3 · (r − 0.5)). With β = 0.1 and sequence KLs [1, 0, 0, 0]: r' = [0.9, 0, 0, 1],
Σ = 1.9, A = [0.9 − 1/3, 0 − 1.9/3, 0 − 1.9/3, 1 − 0.9/3] = [0.5667, −0.6333, −0.6333, 0.7].
Loss (ε = 0.2): ρ = [1.5, 0.5] with A = [1, −1]: −min(1.5, 1.2) = −1.2 and −min(−0.5, −0.8) = 0.8; mean −0.2.
"""

from __future__ import annotations

import torch
from torch import Tensor


def leave_one_out_advantages(rewards: Tensor, group_size: int, valid: Tensor | None = None) -> Tensor:
    """A [B·G] from rewards [B·G] laid out group by group (rollouts of one prompt are contiguous); `valid` [B·G]
    marks the rollouts that count (module docstring)."""
    if group_size < 2:
        raise ValueError(f"RLOO needs at least 2 rollouts per prompt, got {group_size}")
    if rewards.numel() % group_size:
        raise ValueError(f"{rewards.numel()} rewards do not form groups of {group_size}")
    if not bool(torch.isfinite(rewards).all()):
        raise ValueError("rewards must be finite (score a failed rollout before computing advantages)")
    r = rewards.double().view(-1, group_size)  # [B, G]
    ok = torch.ones_like(r, dtype=torch.bool) if valid is None else valid.bool().view(-1, group_size)  # [B, G]
    r = torch.where(ok, r, torch.zeros_like(r))
    n = ok.sum(-1, keepdim=True)  # [B, 1] valid rollouts per group
    baseline = (r.sum(-1, keepdim=True) - r) / (n - 1).clamp(min=1)  # [B, G]: the mean of the other valid ones
    a = torch.where(ok & (n >= 2), r - baseline, torch.zeros_like(r))
    return a.view(-1).to(rewards.dtype)


def normalize_advantages(advantages: Tensor, valid: Tensor | None = None, eps: float = 1e-4) -> Tensor:
    """(A − mean) / (std + eps) over the valid rollouts of the generation batch (std unbiased, as TRL); invalid
    rollouts keep A = 0."""
    ok = torch.ones_like(advantages, dtype=torch.bool) if valid is None else valid.bool()
    if int(ok.sum()) < 2:
        return torch.zeros_like(advantages)
    a = advantages[ok].double()
    out = (advantages.double() - a.mean()) / (a.std() + eps)
    return torch.where(ok, out, torch.zeros_like(out)).to(advantages.dtype)


def sequence_kl(old_logp: Tensor, ref_logp: Tensor, mask: Tensor) -> Tensor:
    """[N]: Σ_t (log π_old − log π_ref) over each completion's tokens (mask [N, T]), the KL RLOO charges."""
    return ((old_logp - ref_logp) * mask).sum(-1)


def sequence_clipped_surrogate(logp: Tensor, old_logp: Tensor, advantages: Tensor, mask: Tensor,
                               eps_low: float = 0.2, eps_high: float = 0.2) -> Tensor:
    """Per-sequence loss [n]: −min(ρ·A, clip(ρ)·A) with ρ = exp(Σ_t (logp − old_logp) over mask [n, T])."""
    m = mask.to(logp.dtype)
    ratio = torch.exp(((logp - old_logp) * m).sum(-1))  # [n]
    a = advantages.to(logp.dtype)
    return -torch.minimum(ratio * a, ratio.clamp(1 - eps_low, 1 + eps_high) * a)
