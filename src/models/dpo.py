"""Preference optimisation: DPO and its variants, optionally token-weighted (critical-token DPO).

A batch holds pairs (docs/contracts.md): `chosen_input_ids`, `chosen_labels` (response tokens and the end token;
the prompt is -100), `chosen_attention_mask`, `chosen_position_ids`, the same under `rejected_`, and optionally
`chosen_weights` / `rejected_weights` [B, T] (per-token constants, e.g. 1 − critical-token scores on the rejected
response) and `chosen_ref_logp` / `rejected_ref_logp` (precomputed reference log-probs).

One forward for both responses: chosen and rejected are stacked into one [2B, T] batch for the policy and one for
the reference, so a step costs two forwards, not four. The loss is the mean over pairs of the step (all
micro-batches and ranks with `method.loss_normalization=step`): numerator Σ pair losses, denominator pairs.

The loss is an object (src/models/preference_losses.py): the DPO family from `beta`, `loss_type` and
`label_smoothing` (the default), or any `PreferenceLoss` given as `loss` (SimPO: `method=simpo`). The reference
model is built only when the loss needs one, so SimPO holds one copy of the weights, not two.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from src.models.logprobs import batch_logprobs, batch_view
from src.models.objective import Objective, StepOutput
from src.models.preference_losses import DPOFamilyLoss, PreferenceLoss, build_preference_loss
from src.models.reference import REFERENCE_MODES, ReferenceModel, peft_model_of

PAIR = ("chosen_", "rejected_")


def stack_views(batch: dict[str, Tensor], prefixes: tuple[str, ...] = PAIR) -> dict[str, Tensor]:
    """The views under `prefixes` stacked along the batch dimension and right-padded to one length:
    [len(prefixes)·B, T]. Padding: input 0, label -100, mask 0, position 0, weight 0, ref_logp 0. A view without
    token weights gets weight 1 (e.g. weights on the rejected responses only)."""
    views = [batch_view(batch, p) for p in prefixes]
    t = max(v["input_ids"].shape[1] for v in views)
    for v in views:
        if "weights" not in v and any("weights" in w for w in views):
            v["weights"] = torch.ones_like(v["labels"], dtype=torch.float32)
    fill = {"labels": -100}
    out: dict[str, Tensor] = {}
    for key in views[0]:
        missing = [p for p, v in zip(prefixes, views) if key not in v]
        if missing:
            raise KeyError(f"batch has {prefixes[0]}{key} but no {missing[0]}{key}")
        parts = [torch.nn.functional.pad(v[key], (0, t - v[key].shape[1]), value=fill.get(key, 0)) for v in views]
        out[key] = torch.cat(parts, dim=0)
    return out


class DPOModule(Objective):
    """Preference optimisation on pairs: (token-weighted) DPO against a frozen reference, or another preference loss.

    beta: β of the loss (> 0). loss_type: sigmoid | ipo | hinge | conservative | robust (`conservative` is label
    smoothing, not critical-token DPO; src/losses/dpo.py). label_smoothing: ε of `conservative` / `robust`.
    loss: a `PreferenceLoss` object instead of the three above (SimPO); then they must be left unset.
    reference: `copy` (frozen copy of the starting policy), `adapter` (the LoRA policy with its adapter off),
    `precomputed` (log-probs carried by the batch), or `auto` (`adapter` for a LoRA backbone, else `copy`); unused
    when the loss needs no reference.
    token_weights: use `chosen_weights` / `rejected_weights` from the batch when present (critical-token DPO).
    """

    data_formats = ("preference",)
    data_hint = "preference pairs (data.format=preference, e.g. data=preference_jsonl)"

    def __init__(
        self,
        backbone: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., torch.optim.lr_scheduler.LRScheduler] | None = None,
        beta: float | None = None,
        loss_type: str | None = None,
        label_smoothing: float | None = None,
        loss: PreferenceLoss | Mapping[str, Any] | None = None,
        reference: str = "auto",
        token_weights: bool = True,
        **base: Any,
    ) -> None:
        given = loss is not None
        if loss is None:
            loss = DPOFamilyLoss(0.1 if beta is None else beta, loss_type or "sigmoid",
                                 0.0 if label_smoothing is None else label_smoothing)
        elif (beta, loss_type, label_smoothing) != (None, None, None):
            raise ValueError("method.loss sets the preference loss; method.beta, method.loss_type and "
                             "method.label_smoothing belong to the DPO family's loss: set them under method.loss")
        loss = build_preference_loss(loss)
        if reference not in (*REFERENCE_MODES, "auto"):
            raise ValueError(f"method.reference={reference!r} is not one of {(*REFERENCE_MODES, 'auto')}")
        super().__init__(backbone, optimizer, scheduler, **base)
        # a given loss object's settings as plain values (checkpoints are read with weights_only; build_preference_loss
        # reads them back); a DPO-family loss is recorded by its beta, loss_type and label_smoothing
        for store in (self.hparams, getattr(self, "_hparams_initial", {})):
            if given:
                store["loss"] = loss.describe()
            else:
                store.pop("loss", None)
        if reference == "auto":
            reference = "adapter" if peft_model_of(backbone) is not None else "copy"
        self.loss = loss
        self.use_token_weights = bool(token_weights)
        self.reference = ReferenceModel(backbone, reference, kernel=self.kernel) if loss.needs_reference else None

    def input_tokens(self, batch: dict[str, Tensor]) -> int:
        return sum(int(batch[f"{p}attention_mask"].sum()) for p in PAIR)

    @staticmethod
    def batch_size_of(batch: dict[str, Tensor]) -> int:
        return int(batch["chosen_input_ids"].shape[0])

    def compute_loss(self, batch: dict[str, Tensor]) -> StepOutput:
        b = self.batch_size_of(batch)
        both = stack_views(batch)  # [2B, T]: chosen rows, then rejected rows
        policy = batch_logprobs(self.backbone, both, kernel=self.kernel)  # [2B, T]
        ref = self.reference.logprobs(both) if self.reference is not None else None  # [2B, T], no gradient
        mask = policy.mask.float()  # [2B, T]
        weights = both.get("weights") if self.use_token_weights else None  # [2B, T] or None
        loss_sum, metrics = self.loss(policy.logp, ref, mask, weights, b)
        return StepOutput(loss_sum, torch.tensor(b, device=loss_sum.device), capacity=b, metrics=metrics)
