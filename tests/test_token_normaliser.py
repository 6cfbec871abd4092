"""The step token normaliser: gradients equal those of Σ NLL / N over the whole optimizer step.

The multi-process version (DDP, accumulation, FSDP2 on SFT data with uneven label counts) is in
tests/test_invariants.py; here the arithmetic, in one process, against a directly computed token mean.
"""

from __future__ import annotations

import pytest
import torch

from src.losses.token_ce import token_cross_entropy
from src.models.token_normaliser import StepTokenNormaliser, step_grad_scale


def test_grad_scale_worked_example() -> None:
    # 2 ranks x 2 micro-batches with 10, 30, 20, 20 labels, ref 32: ∇Σnll / (2·2·32) -> ∇Σnll / 80.
    assert step_grad_scale(accumulate=2, world_size=2, ref=32, n_tokens=80) == pytest.approx(1.6)
    assert step_grad_scale(accumulate=4, world_size=1, ref=16, n_tokens=0) == 1.0  # all masked: nothing to fix


def _micro_batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Three micro-batches of 8 positions with 2, 8 and 5 labels (SFT-like masking)."""
    g = torch.Generator().manual_seed(0)
    out = []
    for n_labels in (2, 8, 5):
        x = torch.randn(8, 6, generator=g)  # [T, d]
        y = torch.randint(0, 11, (8,), generator=g)  # [T]
        y[n_labels:] = -100
        out.append((x, y))
    return out


def _logp(w: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    logp = torch.log_softmax(x @ w.T, dim=-1).gather(1, y.clamp(min=0)[:, None])[:, 0]  # [T]
    return torch.where(y != -100, logp, torch.zeros_like(logp))


def test_accumulated_micro_batches_get_the_exact_step_token_mean_gradient() -> None:
    torch.manual_seed(0)
    w0 = torch.randn(11, 6)
    batches = _micro_batches()
    acc = len(batches)

    # Lightning's accumulation: each micro-batch's loss / A, gradients summed; then the normaliser's rescale.
    w = w0.clone().requires_grad_()
    norm = StepTokenNormaliser()
    for x, y in batches:
        nll_sum, stats = token_cross_entropy(_logp(w, x, y), y, reduction="sum")
        (norm.micro_batch_loss(nll_sum, stats["n_tokens"], y.numel()) / acc).backward()
    assert norm.ref == 8 and float(norm.local_tokens) == 15
    scale = norm.finish_step([w], accumulate=acc, world_size=1)
    assert scale == pytest.approx(acc * 8 / 15) and norm.local_tokens is None  # the next step counts afresh

    # The target: the token mean over all 15 labels of the step.
    w_ref = w0.clone().requires_grad_()
    total = sum(-_logp(w_ref, x, y).sum() for x, y in batches) / 15
    total.backward()
    torch.testing.assert_close(w.grad, w_ref.grad, rtol=1e-6, atol=1e-7)

    # Not vacuous: the mean of the micro-batch means (what plain accumulation optimises) is another gradient.
    w_mm = w0.clone().requires_grad_()
    for x, y in batches:
        (token_cross_entropy(_logp(w_mm, x, y), y)[0] / acc).backward()
    assert (w_mm.grad - w_ref.grad).abs().max() > 1e-2 * w_ref.grad.abs().max()


def test_a_partial_last_window_is_exact() -> None:
    """An epoch ending mid-window: Lightning still divides each of the 2 losses by the configured 3."""
    torch.manual_seed(0)
    w0 = torch.randn(11, 6)
    batches = _micro_batches()[:2]
    w = w0.clone().requires_grad_()
    norm = StepTokenNormaliser()
    for x, y in batches:
        nll_sum, stats = token_cross_entropy(_logp(w, x, y), y, reduction="sum")
        (norm.micro_batch_loss(nll_sum, stats["n_tokens"], y.numel()) / 3).backward()
    norm.finish_step([w], accumulate=3, world_size=1)
    w_ref = w0.clone().requires_grad_()
    (sum(-_logp(w_ref, x, y).sum() for x, y in batches) / 10).backward()  # 2 + 8 labels
    torch.testing.assert_close(w.grad, w_ref.grad, rtol=1e-6, atol=1e-7)


def test_the_reference_constant_cancels_bit_for_bit() -> None:
    """A resumed run fixes `ref` from its own first batch (padded differently): the gradients must not change."""
    torch.manual_seed(0)
    w0 = torch.randn(11, 6)
    grads = []
    for first_positions in (8, 20, 100):  # refs 8, 16, 128
        w = w0.clone().requires_grad_()
        norm = StepTokenNormaliser()
        for i, (x, y) in enumerate(_micro_batches()):
            nll_sum, stats = token_cross_entropy(_logp(w, x, y), y, reduction="sum")
            (norm.micro_batch_loss(nll_sum, stats["n_tokens"], first_positions if i == 0 else 8) / 3).backward()
        norm.finish_step([w], accumulate=3, world_size=1)
        grads.append(w.grad)
    assert torch.equal(grads[0], grads[1]) and torch.equal(grads[0], grads[2])
