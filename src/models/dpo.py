"""Preference optimisation: DPO and its variants, optionally token-weighted (critical-token DPO).

A batch holds pairs (docs/contracts.md): `chosen_input_ids`, `chosen_labels` (response tokens and the end token;
the prompt is -100), `chosen_attention_mask`, `chosen_position_ids`, the same under `rejected_`, and optionally
`chosen_weights` / `rejected_weights` [B, T] (per-token constants, e.g. 1 − critical-token scores on the rejected
response) and `chosen_ref_logp` / `rejected_ref_logp` (precomputed reference log-probs).

One forward for both responses: chosen and rejected are stacked into one [2B, T] batch for the policy and one for
the reference, so a step costs two forwards, not four. The loss is the mean over pairs of the step (all
micro-batches and ranks with `method.loss_normalization=step`): numerator Σ pair losses, denominator pairs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from src.losses.dpo import DPO_LOSS_TYPES, dpo_loss
from src.models.logprobs import batch_logprobs, batch_view
from src.models.objective import Objective, StepOutput
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
    """(Token-weighted) DPO against a frozen reference.

    beta: β of the loss (> 0). loss_type: one of DPO_LOSS_TYPES (`conservative` is label smoothing, not
    critical-token DPO; src/losses/dpo.py). label_smoothing: ε of `conservative` / `robust`.
    reference: `copy` (frozen copy of the starting policy), `adapter` (the LoRA policy with its adapter off),
    `precomputed` (log-probs carried by the batch), or `auto` (`adapter` for a LoRA backbone, else `copy`).
    token_weights: use `chosen_weights` / `rejected_weights` from the batch when present (critical-token DPO).
    """

    data_formats = ("preference",)
    data_hint = "preference pairs (data.format=preference, e.g. data=preference_jsonl)"

    def __init__(
        self,
        backbone: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., torch.optim.lr_scheduler.LRScheduler] | None = None,
        beta: float = 0.1,
        loss_type: str = "sigmoid",
        label_smoothing: float = 0.0,
        reference: str = "auto",
        token_weights: bool = True,
        kernel_impl: str = "auto",
        tokenizer: Any = None,
        compile: bool = False,
        loss_normalization: str = "step",
        nonfinite: str = "stop",
    ) -> None:
        if beta <= 0:
            raise ValueError(f"method.beta must be > 0, got {beta}")
        if loss_type not in DPO_LOSS_TYPES:
            raise ValueError(f"method.loss_type={loss_type!r} is not one of {DPO_LOSS_TYPES} (critical-token DPO "
                             "is loss_type=sigmoid with token weights in the data)")
        if reference not in (*REFERENCE_MODES, "auto"):
            raise ValueError(f"method.reference={reference!r} is not one of {(*REFERENCE_MODES, 'auto')}")
        super().__init__(backbone, optimizer, scheduler, kernel_impl=kernel_impl, tokenizer=tokenizer,
                         compile=compile, loss_normalization=loss_normalization, nonfinite=nonfinite)
        if reference == "auto":
            reference = "adapter" if peft_model_of(backbone) is not None else "copy"
        self.beta, self.loss_type, self.label_smoothing = float(beta), loss_type, float(label_smoothing)
        self.use_token_weights = bool(token_weights)
        self.reference = ReferenceModel(backbone, reference, kernel=self.kernel)

    def input_tokens(self, batch: dict[str, Tensor]) -> int:
        return sum(int(batch[f"{p}attention_mask"].sum()) for p in PAIR)

    @staticmethod
    def batch_size_of(batch: dict[str, Tensor]) -> int:
        return int(batch["chosen_input_ids"].shape[0])

    def compute_loss(self, batch: dict[str, Tensor]) -> StepOutput:
        b = self.batch_size_of(batch)
        both = stack_views(batch)  # [2B, T]: chosen rows, then rejected rows
        policy = batch_logprobs(self.backbone, both, kernel=self.kernel)  # [2B, T]
        ref = self.reference.logprobs(both)  # [2B, T], no gradient
        mask = policy.mask.float()  # [2B, T]
        weights = both.get("weights") if self.use_token_weights else None  # [2B, T] or None
        if self.loss_type == "ipo":  # IPO compares length-averaged log-ratios (as TRL does)
            per_token = mask / mask.sum(-1, keepdim=True).clamp(min=1)
            weights = per_token if weights is None else weights * per_token
        split = lambda x: (x[:b], x[b:]) if x is not None else (None, None)  # noqa: E731
        (lc, lr), (rc, rr), (mc, mr), (wc, wr) = split(policy.logp), split(ref), split(mask), split(weights)
        loss_sum, metrics = dpo_loss(lc, lr, rc, rr, mc, mr, beta=self.beta, loss_type=self.loss_type,
                                     label_smoothing=self.label_smoothing, chosen_weights=wc, rejected_weights=wr,
                                     reduction="sum")
        return StepOutput(loss_sum, torch.tensor(b, device=loss_sum.device), capacity=b, metrics=metrics)
