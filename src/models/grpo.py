"""GRPO (and Dr. GRPO / DAPO-style normalisers) on the shared rollout loop (`method=grpo`).

The loop (sampling, rewards, old log-probs, down-sampling, PPO epochs, micro-batches, validation, checkpointed
sampler) is `RolloutObjective`'s (src/models/rollout.py; D³S and its random control are down-samplers,
src/models/downsamplers.py). GRPO adds two things:
- the group-relative advantage A_i = (r_i − mean_group(r)) / scale (`scale_rewards`: group | batch | none);
- the per-token clipped surrogate (`eps_low`, `eps_high`) + β·k3 KL to the starting policy, normalised by
  `loss_type` (grpo | bnpo | dr_grpo | dapo, as TRL defines them; src/losses/grpo.py has the worked example),
  with the denominator counted over the whole generation batch and all ranks.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from src.losses.grpo import GRPO_LOSS_TYPES, SCALE_REWARDS, clipped_surrogate, group_advantages, k3_kl, normalise
from src.models.logprobs import batch_logprobs
from src.models.objective import StepOutput
from src.models.rollout import ROLLOUT_KEYS, RolloutObjective

__all__ = ["GRPOModule", "ROLLOUT_KEYS"]


class GRPOModule(RolloutObjective):
    """Group-relative policy optimisation (module docstring); the rest of the arguments are `RolloutObjective`'s.

    scale_rewards: group | batch | none. loss_type: grpo | bnpo | dr_grpo | dapo. eps_low, eps_high: the clip
    range of the ratio. beta: the k3 KL term's weight in the loss (0: no reference model).
    """

    method_name = "grpo"

    def __init__(self, *args: Any, scale_rewards: str = "group", loss_type: str = "dapo", eps_low: float = 0.2,
                 eps_high: float = 0.2, **kwargs: Any) -> None:
        if scale_rewards not in SCALE_REWARDS:
            raise ValueError(f"method.scale_rewards={scale_rewards!r} is not one of {SCALE_REWARDS}")
        if loss_type not in GRPO_LOSS_TYPES:
            raise ValueError(f"method.loss_type={loss_type!r} is not one of {GRPO_LOSS_TYPES}")
        if eps_low < 0 or eps_high < 0:
            raise ValueError("method.eps_low and method.eps_high must be >= 0")
        super().__init__(*args, **kwargs)
        self.scale_rewards, self.loss_type = scale_rewards, loss_type
        self.eps_low, self.eps_high = float(eps_low), float(eps_high)

    def advantages(self, rewards: Tensor, valid: Tensor, old_logp: Tensor, ref_logp: Tensor | None,
                   token_mask: Tensor) -> Tensor:
        return group_advantages(rewards, self.g, self.scale_rewards, valid=valid)  # [N]

    def denominator(self, loss_mask: Tensor) -> Tensor:
        """The normaliser's denominator for a micro-batch's loss mask [n, T] (src/losses/grpo.py), counting only
        rows that keep a token: a row with an empty mask (a micro-batch padded so that every DDP rank runs as many
        backwards, or a rank with nothing kept) adds no sequence and no micro-batch to the mean."""
        has = loss_mask.bool().any(-1)  # [n]
        if self.loss_type in ("grpo", "dr_grpo"):
            return has.sum().float()
        if self.loss_type == "bnpo":
            return has.any().float()
        return loss_mask.bool().sum().float()

    def compute_loss(self, batch: dict[str, Tensor]) -> StepOutput:
        """The GRPO loss of one (micro-)batch of fixed rollouts as numerator / denominator (src/losses/grpo.py).

        batch: input_ids, labels, attention_mask, position_ids [n, T]; `advantages` [n]; `old_logp` [n, T];
        `loss_mask` [n, T] bool (kept tokens); `ref_logp` [n, T] when beta > 0.
        """
        # scored at the sampling temperature: the policy the rollouts came from is softmax(z / T) (as in TRL)
        out = batch_logprobs(self.backbone, {k: batch[k] for k in ROLLOUT_KEYS}, kernel=self.kernel,
                             temperature=self.temperature)  # [n, T]
        mask = batch["loss_mask"].bool() & out.mask  # [n, T]
        per_token = clipped_surrogate(out.logp, batch["old_logp"], batch["advantages"], self.eps_low,
                                      self.eps_high)  # [n, T]
        metrics: dict[str, Tensor] = {}
        if self.beta > 0:
            kl = k3_kl(out.logp, batch["ref_logp"])  # [n, T]
            per_token = per_token + self.beta * kl
            metrics["kl"] = (kl.detach() * mask).sum() / mask.sum().clamp(min=1)
        num, _ = normalise(per_token, mask, self.loss_type, self.max_new_tokens)
        den = self.denominator(mask)
        with torch.no_grad():
            ratio = torch.exp(out.logp.detach() - batch["old_logp"])
            a = batch["advantages"][:, None]
            clipped = ((ratio < 1 - self.eps_low) & (a < 0)) | ((ratio > 1 + self.eps_high) & (a > 0))
            metrics["clip_fraction"] = (clipped & mask).sum() / mask.sum().clamp(min=1)
        return StepOutput(num, den.detach(), capacity=int(mask.numel()), metrics=metrics)
