"""Causal-LM objective: pretraining and SFT through the per-token log-prob kernel.

The module never asks the backbone for logits: `src/models/logprobs.py` hands hidden states [B, T, d] and the
output weight [V, d] to `src.kernels.token_logprobs`, so the fused path never holds [B·T, V] logits for the
backward. Whether a run is pretraining or SFT is decided by the data (SFT batches carry -100 on prompts).
Everything that is not the loss (optimizer, sharding, resume, the step-exact token mean) lives in the base,
src/models/objective.py.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from src.losses.token_ce import token_cross_entropy
from src.models.logprobs import batch_logprobs
from src.models.objective import Objective, StepOutput

LOSS_IMPLS = ("fused", "reference")


class CausalLMModule(Objective):
    """Next-token prediction on pre-shifted labels (docs/contracts.md): loss = Σ NLL / label tokens."""

    reports_perplexity = True

    def __init__(
        self,
        backbone: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., torch.optim.lr_scheduler.LRScheduler] | None = None,
        loss_impl: str = "fused",
        **base: Any,
    ) -> None:
        if loss_impl not in LOSS_IMPLS:
            raise ValueError(f"method.loss_impl={loss_impl!r} is not one of {LOSS_IMPLS}")
        super().__init__(backbone, optimizer, scheduler, **base)
        if loss_impl == "reference":
            self.kernel = "reference"

    def token_logprobs(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Per-token log π(labels) for a batch, [B, T]; 0 where labels == -100."""
        # The loss is −Σ mask·logp / n: a multiple of the label mask, so the kernel may build the gradients in
        # its forward (grad_hint; exact for any loss, faster for this one).
        return batch_logprobs(self.backbone, batch, kernel=self.kernel, mask_grad_hint=True).logp

    def compute_loss(self, batch: dict[str, torch.Tensor]) -> StepOutput:
        logp = self.token_logprobs(batch)  # [B, T]
        labels = batch["labels"]  # [B, T]
        nll_sum, stats = token_cross_entropy(logp.flatten(), labels.flatten(), reduction="sum")
        return StepOutput(nll_sum, stats["n_tokens"], capacity=labels.numel())
