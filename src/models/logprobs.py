"""The one path from (backbone, batch) to per-token log-probs and entropy, used by every objective and evaluation.

Why one function: the backbone reads `input_ids` plus whichever of `attention_mask`, `position_ids` and
`segment_ids` the batch carries (docs/contracts.md). Written by hand at each call site, some sites passed a subset
(an SFT batch scored without its `position_ids`, a packed batch without `segment_ids` attending across documents)
and got other numbers than training did. Here the batch's keys are forwarded as they are, and the head goes
through `src.kernels.token_logprobs`, so [tokens, vocab] logits are never kept for the backward.

Objectives that score several views of one example (DPO's chosen and rejected) keep them under prefixed keys
(`chosen_input_ids`, ...): `prefix=` selects one view.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from src.kernels import token_logprobs

IGNORE_INDEX = -100
# Batch keys the backbone contract accepts besides input_ids (docs/contracts.md, Backbone).
BACKBONE_KEYS = ("attention_mask", "position_ids", "segment_ids")


@dataclass
class TokenLogprobs:
    """Per-token results of one batch, in the batch's shape.

    logp:    [B, T] log π(labels[b, t]); 0 where the label is ignored.
    entropy: [B, T] entropy of π at each position, or None when not requested; 0 where the label is ignored.
    mask:    [B, T] bool, True where a label enters the loss.
    """

    logp: Tensor
    mask: Tensor
    entropy: Tensor | None = None


def batch_view(batch: Mapping[str, Tensor], prefix: str = "") -> dict[str, Tensor]:
    """The keys of one view of a batch with the prefix removed (`chosen_input_ids` -> `input_ids`)."""
    if not prefix:
        return dict(batch)
    return {k[len(prefix):]: v for k, v in batch.items() if k.startswith(prefix)}


def backbone_hidden(backbone: nn.Module, batch: Mapping[str, Tensor], prefix: str = "") -> Tensor:
    """Final-normed hidden states [B, T, d] of the batch's `input_ids`, with every backbone key it carries."""
    view = batch_view(batch, prefix)
    if "input_ids" not in view:
        raise KeyError(f"batch has no {prefix}input_ids (keys: {sorted(batch)})")
    extra = {k: view[k] for k in BACKBONE_KEYS if view.get(k) is not None}
    return backbone(view["input_ids"], **extra)


def head_logprobs(
    backbone: nn.Module,
    hidden: Tensor,
    labels: Tensor,
    *,
    kernel: str | None = None,
    with_entropy: bool = False,
    entropy_grad: bool = False,
    temperature: float = 1.0,
    grad_hint: Tensor | None = None,
    dtype: torch.dtype | None = None,
) -> Tensor | tuple[Tensor, Tensor]:
    """log π(labels) (and entropy) from hidden states [..., d] through the backbone's output layer.

    `kernel` picks the implementation (None = the process default, src/kernels/dispatch.py). `grad_hint`: see
    `token_logprobs` (the cross-entropy's label mask makes the backward cheaper; results do not depend on it).
    `dtype`: cast hidden states and head to it first (evaluations of a bf16 model score in fp32).
    """
    weight, bias = backbone.output_weight, backbone.output_bias
    if dtype is not None:
        hidden, weight = hidden.to(dtype), weight.to(dtype)
        bias = None if bias is None else bias.to(dtype)
    return token_logprobs(
        hidden, weight, labels, bias=bias, impl=kernel, with_entropy=with_entropy, entropy_grad=entropy_grad,
        temperature=temperature, grad_hint=grad_hint,
    )


def batch_logprobs(
    backbone: nn.Module,
    batch: Mapping[str, Tensor],
    *,
    prefix: str = "",
    labels: Tensor | None = None,
    kernel: str | None = None,
    with_entropy: bool = False,
    entropy_grad: bool = False,
    temperature: float = 1.0,
    mask_grad_hint: bool = False,
    dtype: torch.dtype | None = None,
) -> TokenLogprobs:
    """Per-token log-probs of a batch's (pre-shifted) labels, [B, T].

    labels: default `batch[prefix + "labels"]`. mask_grad_hint: the caller's loss is a constant times the sum of
    the label-masked log-probs (cross-entropy), so the kernel may build gradients in its forward.

    Under DeepSpeed ZeRO-3 the output weight is gathered by reading it inside the engine's forward, which is
    where Lightning runs training/validation steps; outside a step, wrap calls in
    `deepspeed.zero.GatheredParameters`.
    """
    hidden = backbone_hidden(backbone, batch, prefix)  # [B, T, d]
    labels = batch_view(batch, prefix)["labels"] if labels is None else labels  # [B, T]
    mask = labels != IGNORE_INDEX  # [B, T]
    out = head_logprobs(
        backbone, hidden.flatten(0, 1), labels.flatten(), kernel=kernel, with_entropy=with_entropy,
        entropy_grad=entropy_grad, temperature=temperature,
        grad_hint=mask.flatten().float() if mask_grad_hint else None, dtype=dtype,
    )
    if with_entropy:
        logp, entropy = out
        return TokenLogprobs(logp.view_as(labels), mask, entropy.view_as(labels))
    return TokenLogprobs(out.view_as(labels), mask)
