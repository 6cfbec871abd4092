"""D³S: dynamic dual-level down-sampling for GRPO — which rollouts and which tokens enter the loss.

Sample level: keep the n rollouts whose advantages have the largest variance. For a fixed n, a maximising subset
is always the k largest advantages together with the n − k smallest, for some k (moving any kept value toward
the middle can only lower the spread), so one sort and a scan over k with prefix sums finds it in O(M log M):
    Var(S) = E_S[A²] − E_S[A]²  over the kept set S (population variance).
Cross-group (the default): all B·G advantages form one pool; intra-group: each group keeps its own n. Advantages
are not re-normalised after selection; groups whose rewards are all equal have A = 0 and are selected last.

Token level: among kept rollouts, keep the fraction K of tokens with the largest |A_i|·H_{i,t} (H: the policy's
full-vocabulary entropy at that position, computed without gradient). The mask is fixed for all PPO epochs of
one generation batch.

Schedule: progress p ∈ [0, 1] moves both fractions linearly, N(p) = (1 − p)·N_init + p·N_final (and K alike).

Worked example: A = [2, 1, 0, 0, −1, −3], n = 3: candidates top-3 {2, 1, 0}: Var 0.667; top-2 + bottom-1
{2, 1, −3}: Var 4.667; top-1 + bottom-2 {2, −1, −3}: Var 4.222; bottom-3 {0, −1, −3}: Var 1.556 → keep {2, 1, −3}.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def max_variance_subset(advantages: Tensor, n: int) -> Tensor:
    """Indices (sorted) of n values of `advantages` [M] with the largest population variance."""
    m = advantages.numel()
    if not 0 <= n <= m:
        raise ValueError(f"cannot keep {n} of {m} rollouts")
    if n == 0:
        return torch.zeros(0, dtype=torch.long, device=advantages.device)
    a = advantages.detach().double()
    order = torch.argsort(a, descending=True, stable=True)  # [M] largest first
    s = a[order]
    zero = torch.zeros(1, dtype=s.dtype, device=s.device)
    top_sum = torch.cat([zero, s.cumsum(0)])  # [M+1]: sum of the k largest
    top_sq = torch.cat([zero, (s * s).cumsum(0)])
    rev = s.flip(0)  # smallest first
    bot_sum = torch.cat([zero, rev.cumsum(0)])
    bot_sq = torch.cat([zero, (rev * rev).cumsum(0)])
    k = torch.arange(n + 1, device=s.device)  # k largest + (n − k) smallest
    total = top_sum[k] + bot_sum[n - k]
    total_sq = top_sq[k] + bot_sq[n - k]
    var = total_sq / n - (total / n) ** 2  # [n+1]
    best = int(torch.argmax(var))
    kept = torch.cat([order[:best], order[m - (n - best):] if n - best > 0 else order[:0]])
    return kept.sort().values


def kept_count(fraction: float, total: int, minimum: int = 1) -> int:
    """round(fraction·total), at least `minimum` (and at most total)."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"a kept fraction must be in (0, 1], got {fraction}")
    return max(min(minimum, total), min(total, int(math.floor(fraction * total + 0.5))))


def select_rollouts(advantages: Tensor, group_size: int, fraction: float, mode: str = "cross") -> Tensor:
    """Bool mask [B·G] of the rollouts kept: `cross` picks round(fraction·B·G) from the pooled advantages,
    `intra` picks round(fraction·G) (at least 2 where G allows, so a group keeps a contrast) in every group."""
    m = advantages.numel()
    keep = torch.zeros(m, dtype=torch.bool, device=advantages.device)
    if mode == "cross":
        keep[max_variance_subset(advantages, kept_count(fraction, m))] = True
        return keep
    if mode != "intra":
        raise ValueError(f"D³S sample mode {mode!r} is not 'cross' or 'intra'")
    n = kept_count(fraction, group_size, minimum=2)
    for g in range(m // group_size):
        sl = slice(g * group_size, (g + 1) * group_size)
        keep[g * group_size + max_variance_subset(advantages[sl], n)] = True
    return keep


def select_tokens(advantages: Tensor, entropy: Tensor, mask: Tensor, fraction: float) -> Tensor:
    """Bool mask [N, T]: the top `fraction` of the tokens in `mask` by |A_i|·H_{i,t} (ties broken by position).

    advantages [N], entropy [N, T] (no gradient needed), mask [N, T] (completion tokens of the kept rollouts)."""
    mask = mask.bool()
    n_tokens = int(mask.sum())
    if n_tokens == 0:
        return mask.clone()
    score = (advantages.detach().abs()[:, None] * entropy.detach()).masked_fill(~mask, -1.0)  # [N, T]
    k = kept_count(fraction, n_tokens)
    top = torch.topk(score.flatten(), k).indices
    out = torch.zeros(mask.numel(), dtype=torch.bool, device=mask.device)
    out[top] = True
    return out.view_as(mask) & mask


def linear_schedule(progress: float, start: float, end: float) -> float:
    """(1 − p)·start + p·end with p clamped to [0, 1]."""
    p = min(max(float(progress), 0.0), 1.0)
    return (1.0 - p) * start + p * end
