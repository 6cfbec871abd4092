"""Preference losses as objects: what each needs, and its loss of a stacked pair batch (`method.loss`).

`DPOModule` (src/models/dpo.py) computes the policy's per-token log-probs of the chosen and rejected responses in
one stacked [2B, T] forward and hands them to its loss object, which declares what it needs:
- `needs_reference`: the module builds a reference model (and runs its forward) only when this is true;
- `length_normalized`: the loss compares per-token *averages* over each response, not sums (IPO, SimPO).

- `DPOFamilyLoss(beta, loss_type, label_smoothing)`: DPO and its variants against a reference, optionally
  token-weighted (critical-token DPO): sigmoid | ipo | hinge | conservative | robust (src/losses/dpo.py).
- `SimPOLoss(beta, gamma, label_smoothing)`: reference-free, length-averaged log-probs, target margin γ
  (src/losses/simpo.py; `method=simpo`).

Adding one (ORPO, a new DPO variant): a subclass with its two flags and `__call__`, plus
`conf/method/<name>.yaml` whose `loss:` node names it (docs/design.md, "How to add a preference loss").
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from src.losses.dpo import DPO_LOSS_TYPES, dpo_loss
from src.losses.simpo import simpo_pair_losses


class PreferenceLoss(abc.ABC):
    """The base: the loss of a stacked batch (chosen rows first, then rejected) as (Σ pair losses, metrics)."""

    needs_reference = True
    length_normalized = False

    @abc.abstractmethod
    def __call__(self, logp: Tensor, ref_logp: Tensor | None, mask: Tensor, weights: Tensor | None,
                 pairs: int) -> tuple[Tensor, dict[str, Tensor]]:
        """logp [2B, T] (differentiable), ref_logp [2B, T] or None, mask [2B, T] float, token weights [2B, T] or
        None; `pairs` = B. Returns the summed per-pair losses and detached per-pair means of the metrics."""

    def describe(self) -> dict[str, Any]:
        """The settings as a plain mapping (the run's hyper-parameters)."""
        return {"name": type(self).__name__}

    @staticmethod
    def per_token_average(mask: Tensor, weights: Tensor | None) -> Tensor:
        """Weights that turn a masked sum over a response into its average over the response's tokens."""
        per_token = mask / mask.sum(-1, keepdim=True).clamp(min=1)  # [2B, T]
        return per_token if weights is None else weights * per_token


class DPOFamilyLoss(PreferenceLoss):
    """DPO and its variants against a reference (src/losses/dpo.py); `ipo` compares length-averaged log-ratios
    (as TRL does), the others sums. Token weights (critical-token DPO) multiply the per-token log-ratios."""

    def __init__(self, beta: float = 0.1, loss_type: str = "sigmoid", label_smoothing: float = 0.0) -> None:
        if beta <= 0:
            raise ValueError(f"method.beta must be > 0, got {beta}")
        if loss_type not in DPO_LOSS_TYPES:
            raise ValueError(f"method.loss_type={loss_type!r} is not one of {DPO_LOSS_TYPES} (critical-token DPO "
                             "is loss_type=sigmoid with token weights in the data)")
        self.beta, self.loss_type, self.label_smoothing = float(beta), loss_type, float(label_smoothing)
        self.length_normalized = loss_type == "ipo"

    def __call__(self, logp: Tensor, ref_logp: Tensor | None, mask: Tensor, weights: Tensor | None,
                 pairs: int) -> tuple[Tensor, dict[str, Tensor]]:
        if ref_logp is None:
            raise ValueError(f"loss_type={self.loss_type} compares against a reference model; none was built")
        if self.length_normalized:
            weights = self.per_token_average(mask, weights)
        b = pairs
        split = lambda x: (x[:b], x[b:]) if x is not None else (None, None)  # noqa: E731
        (lc, lr), (rc, rr), (mc, mr), (wc, wr) = split(logp), split(ref_logp), split(mask), split(weights)
        return dpo_loss(lc, lr, rc, rr, mc, mr, beta=self.beta, loss_type=self.loss_type,
                        label_smoothing=self.label_smoothing, chosen_weights=wc, rejected_weights=wr,
                        reduction="sum")

    def describe(self) -> dict[str, Any]:
        return {"name": "dpo", "beta": self.beta, "loss_type": self.loss_type,
                "label_smoothing": self.label_smoothing}


class SimPOLoss(PreferenceLoss):
    """SimPO (src/losses/simpo.py): −log σ(β·(avg log π(y_w) − avg log π(y_l)) − γ); no reference model.

    Metrics as TRL's CPO trainer names them: `rewards/chosen` = β · average log-prob of the chosen response, the
    same for rejected, their margin and accuracy; `logps/*` the summed log-likelihoods."""

    needs_reference = False
    length_normalized = True

    def __init__(self, beta: float = 2.0, gamma: float = 1.0, label_smoothing: float = 0.0) -> None:
        if beta <= 0:
            raise ValueError(f"method.loss.beta must be > 0, got {beta}")
        if not 0.0 <= label_smoothing < 0.5:
            raise ValueError(f"method.loss.label_smoothing must be in [0, 0.5), got {label_smoothing}")
        self.beta, self.gamma, self.label_smoothing = float(beta), float(gamma), float(label_smoothing)

    def __call__(self, logp: Tensor, ref_logp: Tensor | None, mask: Tensor, weights: Tensor | None,
                 pairs: int) -> tuple[Tensor, dict[str, Tensor]]:
        avg = (logp * self.per_token_average(mask, weights.detach() if weights is not None else None)).sum(-1)
        chosen, rejected = avg[:pairs], avg[pairs:]  # [B], [B]
        losses = simpo_pair_losses(chosen, rejected, self.beta, self.gamma, self.label_smoothing)  # [B]
        with torch.no_grad():
            rc, rr = self.beta * chosen.detach(), self.beta * rejected.detach()
            sums = (logp.detach() * mask).sum(-1)  # [2B]
            metrics = {"rewards/chosen": rc.mean(), "rewards/rejected": rr.mean(), "rewards/margin": (rc - rr).mean(),
                       "rewards/accuracy": (rc > rr).float().mean(), "logps/chosen": sums[:pairs].mean(),
                       "logps/rejected": sums[pairs:].mean()}
        return losses.sum(), metrics

    def describe(self) -> dict[str, Any]:
        return {"name": "simpo", "beta": self.beta, "gamma": self.gamma, "label_smoothing": self.label_smoothing}


LOSSES: dict[str, type[PreferenceLoss]] = {"dpo": DPOFamilyLoss, "simpo": SimPOLoss}


def build_preference_loss(spec: PreferenceLoss | Mapping[str, Any]) -> PreferenceLoss:
    """A preference loss from an object (what Hydra builds from `method.loss._target_`) or from the mapping
    `describe()` gives (`{name: dpo|simpo, ...settings}`, as a checkpoint's hyper-parameters hold it)."""
    if isinstance(spec, PreferenceLoss):
        return spec
    if not isinstance(spec, Mapping):
        raise ValueError(f"method.loss built a {type(spec).__name__}, not a PreferenceLoss "
                         "(src/models/preference_losses.py)")
    settings = dict(spec)
    name = settings.pop("name", None)
    if name not in LOSSES:
        raise ValueError(f"method.loss needs a _target_ (a PreferenceLoss class) or name: one of {tuple(LOSSES)}, "
                         f"got {name!r}")
    return LOSSES[name](**settings)
