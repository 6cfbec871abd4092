"""Exact token-mean loss over a whole optimizer step: all micro-batches and all ranks.

Why: a causal-LM loss that is a token mean *per micro-batch* makes DDP and gradient accumulation optimise the
mean of the micro-batch means. That equals the mean over the step's label tokens only when every micro-batch has
the same number of labels; with SFT prompt masking or document boundaries it does not, and how the global batch is
split over ranks and micro-batches re-weights tokens (a response in a micro-batch with few labels counts more).
This is the gradient-accumulation bug Hugging Face fixed in transformers 4.46; torchtune normalises the same way.

How (no look-ahead needed): every micro-batch's loss is its label-NLL *sum* divided by a constant `ref` (the same
on every rank and every micro-batch, so only the scale changes, not the weighting). After the window's backwards,
Lightning has divided each loss by the accumulation count A and DDP / FSDP2 averaged over the W ranks, so the
gradient is ∇ Σ nll / (A·W·ref). Multiplying it by A·W·ref / N, with N the step's label count summed over
micro-batches and ranks (one all-reduce of a scalar), gives exactly ∇ Σ nll / N. This runs inside the
optimizer-step closure, before every `on_before_optimizer_step` hook and before gradient clipping, so clipping,
grad-norm logging and the optimizer all see the exact gradient.

DeepSpeed keeps gradients in its own (partitioned) buffers and steps itself, so there the loss stays the
per-micro-batch mean (`micro_batch`); runs say so once in the log.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist

LOSS_NORMALIZATIONS = ("step", "micro_batch")


def _all_reduce(x: torch.Tensor, op: dist.ReduceOp) -> torch.Tensor:
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(x, op=op)
    return x


def step_grad_scale(accumulate: int, world_size: int, ref: float, n_tokens: float) -> float:
    """Factor turning the gradient of mean_{ranks, micro-batches}(nll_sum / ref) into that of Σ nll / N.

    Worked example: 2 ranks x 2 micro-batches with 10, 30, 20, 20 labels, ref 32: the applied gradient is
    ∇Σnll / (2·2·32); N = 80, so the factor is 2·2·32 / 80 = 1.6 and the result is ∇Σnll / 80.
    An all-masked step (N = 0) has zero gradient; the factor is then 1 (nothing to rescale).
    """
    if n_tokens <= 0:
        return 1.0
    return accumulate * world_size * ref / n_tokens


class StepTokenNormaliser:
    """Per-process state: the shared constant `ref` and the label tokens counted since the last optimizer step."""

    def __init__(self) -> None:
        self.ref: float | None = None
        self.local_tokens: torch.Tensor | None = None  # on the device: no host sync per micro-batch

    def micro_batch_loss(self, nll_sum: torch.Tensor, n_tokens: torch.Tensor, n_positions: int) -> torch.Tensor:
        """nll_sum / ref, counting this micro-batch's labels.

        `ref` is fixed on the first call of the process: the power of two nearest the largest micro-batch size in
        label positions over the ranks (one all-reduce). Any constant shared by the step is exact; this one keeps
        the loss near a token mean in scale (fp16 loss scaling starts where it used to), and being a power of two
        it cancels bit for bit (dividing and multiplying by 2^k are exact), so a resumed run, whose first batch
        may be padded differently, trains exactly like the uninterrupted one."""
        if self.ref is None:
            ref = torch.tensor(float(n_positions), device=nll_sum.device)
            largest = float(_all_reduce(ref, dist.ReduceOp.MAX))
            self.ref = 2.0 ** round(math.log2(max(largest, 1.0)))
        n = n_tokens.detach().to(torch.float64)
        self.local_tokens = n if self.local_tokens is None else self.local_tokens + n
        return nll_sum / self.ref

    def finish_step(self, params: list[torch.nn.Parameter], accumulate: int, world_size: int) -> float:
        """Rescale the accumulated, rank-averaged gradients to the step's exact token mean; returns the factor."""
        # Every rank joins the all-reduce, also one that ran no micro-batch (it counts 0).
        n = self.local_tokens if self.local_tokens is not None else torch.zeros((), dtype=torch.float64,
                                                                                 device=_device(params))
        n_total = float(_all_reduce(n.clone(), dist.ReduceOp.SUM))  # the one host sync per optimizer step
        self.local_tokens = None
        if self.ref is None:  # no micro-batch ran (a skipped step): nothing to rescale
            return 1.0
        scale = step_grad_scale(accumulate, world_size, self.ref, n_total)
        if scale != 1.0:
            with torch.no_grad():
                for p in params:
                    if p.grad is not None:
                        p.grad.mul_(scale)  # DTensor-aware under FSDP2
        return scale


def _device(params: list[torch.nn.Parameter]) -> torch.device:
    for p in params:
        return p.device
    return torch.device("cpu")
