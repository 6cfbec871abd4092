"""RLOO on the shared rollout loop (`method=rloo`): the leave-one-out advantage and the sequence-level loss.

Everything but the advantage and the loss is `RolloutObjective`'s (src/models/rollout.py), so RLOO composes with
the down-samplers (`downsample=d3s|random`) and the skill curricula (`curriculum=skillit`) as GRPO does. The
formulas, TRL's conventions and a worked example are in src/losses/rloo.py:
- the KL to the reference (`beta` > 0) is charged in the reward, per sequence, not as a loss term;
- the ratio is the sequence's, exp(Σ_t log π_θ − Σ_t log π_old) over its kept tokens, clipped as in PPO;
- the loss is the mean over sequences (the denominator counts sequences that keep a token, over the whole
  generation batch and all ranks).

Under a token-level down-sampler (D³S's K < 1) the sequence ratio sums the kept tokens only: the dropped tokens
get no gradient, as in GRPO.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from src.losses.rloo import leave_one_out_advantages, normalize_advantages, sequence_clipped_surrogate, sequence_kl
from src.models.logprobs import batch_logprobs
from src.models.objective import StepOutput
from src.models.rollout import ROLLOUT_KEYS, RolloutObjective


class RLOOModule(RolloutObjective):
    """REINFORCE leave-one-out (module docstring); the rest of the arguments are `RolloutObjective`'s.

    eps_low, eps_high: the clip range of the sequence ratio. normalize_advantages: standardise A over the
    generation batch (TRL's option, off by default). beta: the weight of the sequence KL charged in the reward.
    """

    method_name = "rloo"

    def __init__(self, *args: Any, eps_low: float = 0.2, eps_high: float = 0.2, normalize_advantages: bool = False,
                 **kwargs: Any) -> None:
        if eps_low < 0 or eps_high < 0:
            raise ValueError("method.eps_low and method.eps_high must be >= 0")
        super().__init__(*args, **kwargs)
        self.eps_low, self.eps_high = float(eps_low), float(eps_high)
        self.normalize = bool(normalize_advantages)

    def advantages(self, rewards: Tensor, valid: Tensor, old_logp: Tensor, ref_logp: Tensor | None,
                   token_mask: Tensor) -> Tensor:
        r = rewards
        if ref_logp is not None:  # beta > 0: the KL is paid in the reward (src/losses/rloo.py)
            r = rewards - self.beta * sequence_kl(old_logp, ref_logp, token_mask).to(rewards.dtype)  # [N]
        a = leave_one_out_advantages(r, self.g, valid=valid)  # [N]
        return normalize_advantages(a, valid) if self.normalize else a

    def denominator(self, loss_mask: Tensor) -> Tensor:
        """Sequences that keep a token (a padded micro-batch row with an empty mask adds none)."""
        return loss_mask.bool().any(-1).sum().float()

    def compute_loss(self, batch: dict[str, Tensor]) -> StepOutput:
        """Σ of per-sequence clipped losses over one (micro-)batch of fixed rollouts / sequences.

        batch: input_ids, labels, attention_mask, position_ids [n, T]; `advantages` [n]; `old_logp` [n, T];
        `loss_mask` [n, T] bool (kept tokens); `ref_logp` [n, T] when beta > 0 (for the `kl` metric).
        """
        out = batch_logprobs(self.backbone, {k: batch[k] for k in ROLLOUT_KEYS}, kernel=self.kernel,
                             temperature=self.temperature)  # [n, T]
        mask = batch["loss_mask"].bool() & out.mask  # [n, T]
        has = mask.any(-1)  # [n]
        per_seq = sequence_clipped_surrogate(out.logp, batch["old_logp"], batch["advantages"], mask, self.eps_low,
                                             self.eps_high)  # [n]
        num = (per_seq * has).sum()
        metrics: dict[str, Tensor] = {}
        with torch.no_grad():
            ratio = torch.exp(((out.logp.detach() - batch["old_logp"]) * mask).sum(-1))  # [n]
            a = batch["advantages"]
            clipped = ((ratio < 1 - self.eps_low) & (a < 0)) | ((ratio > 1 + self.eps_high) & (a > 0))
            metrics["clip_fraction"] = (clipped & has).sum() / has.sum().clamp(min=1)
            if "ref_logp" in batch:  # the mean per-token KL (k1) of the sampling policy to the reference
                metrics["kl"] = ((batch["old_logp"] - batch["ref_logp"]) * mask).sum() / mask.sum().clamp(min=1)
        return StepOutput(num, self.denominator(mask).detach(), capacity=int(has.numel()), metrics=metrics)
