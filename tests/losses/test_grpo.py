"""GRPO advantages, surrogate, KL and the four normalisers against the worked examples in src/losses/grpo.py."""

from __future__ import annotations

import math

import pytest
import torch

from src.losses.grpo import clipped_surrogate, group_advantages, k3_kl, normalise


def test_group_advantages_worked_example_and_all_equal_groups() -> None:
    a = group_advantages(torch.tensor([1.0, 0, 0, 1, 1, 1, 1, 1]), group_size=4)
    s = 0.5 / (math.sqrt(1 / 3) + 1e-6)
    torch.testing.assert_close(a, torch.tensor([s, -s, -s, s, 0, 0, 0, 0]))
    batch = group_advantages(torch.tensor([1.0, 0, 0, 1, 1, 1, 1, 1]), 4, "batch")
    torch.testing.assert_close(batch[:4], torch.tensor([0.5, -0.5, -0.5, 0.5]) / (torch.tensor(
        [1.0, 0, 0, 1, 1, 1, 1, 1]).std() + 1e-6))
    assert torch.equal(group_advantages(torch.tensor([3.0, 1.0]), 2, "none"), torch.tensor([1.0, -1.0]) / (1 + 1e-6))
    assert torch.equal(group_advantages(torch.zeros(4), 2), torch.zeros(4))  # no NaN from a zero std
    with pytest.raises(ValueError, match="finite"):
        group_advantages(torch.tensor([1.0, float("nan")]), 2)
    with pytest.raises(ValueError, match="not one of"):
        group_advantages(torch.ones(2), 2, "mean")


def test_surrogate_and_normalisers_match_the_worked_example() -> None:
    ratio = torch.tensor([[1.5, 1.0], [0.5, 1.0]])
    logp = torch.log(ratio).requires_grad_()
    per_token = clipped_surrogate(logp, torch.zeros(2, 2), torch.tensor([1.0, -1.0]))
    torch.testing.assert_close(per_token, torch.tensor([[-1.2, -1.0], [0.8, 1.0]]))
    mask = torch.tensor([[1, 1], [1, 0]])
    expected = {"grpo": -0.15, "bnpo": -1.4 / 3, "dapo": -1.4 / 3, "dr_grpo": -0.35}
    for loss_type, value in expected.items():
        num, den = normalise(per_token, mask, loss_type, max_completion_length=2)
        assert float(num / den) == pytest.approx(value), loss_type
    # gradient: clipped tokens (ρ beyond 1 ± ε in the direction A pushes) get none; others −ρ·A/(count)
    num, den = normalise(per_token, mask, "dapo")
    (num / den).backward()
    torch.testing.assert_close(logp.grad, torch.tensor([[0.0, -1.0 / 3], [0.0, 0.0]]))


def test_normalisers_sum_exactly_over_micro_batches() -> None:
    """The step normaliser divides Σ numerators by Σ denominators: splitting a generation batch in two must give
    the whole batch's loss for grpo, dr_grpo and dapo (bnpo is the mean of micro-batch means by definition)."""
    g = torch.Generator().manual_seed(0)
    per_token = torch.randn(6, 5, generator=g)
    mask = torch.rand(6, 5, generator=g) > 0.3
    for loss_type in ("grpo", "dr_grpo", "dapo"):
        whole = normalise(per_token, mask, loss_type, 5)
        parts = [normalise(per_token[s], mask[s], loss_type, 5) for s in (slice(0, 2), slice(2, 6))]
        split = sum(p[0] for p in parts) / sum(p[1] for p in parts)
        torch.testing.assert_close(split, whole[0] / whole[1])


def test_k3_kl_is_zero_at_equality_and_positive_elsewhere() -> None:
    logp = torch.tensor([-1.0, -2.0, -0.5])
    assert torch.equal(k3_kl(logp, logp), torch.zeros(3))
    kl = k3_kl(logp, torch.tensor([-1.5, -1.0, -0.5]))
    torch.testing.assert_close(kl, torch.tensor([math.exp(-0.5) + 0.5 - 1, math.exp(1.0) - 1.0 - 1, 0.0]))


def test_dropped_rollouts_leave_their_group() -> None:
    r = torch.tensor([1.0, float("nan"), 0, 0, 2, 2, float("nan"), 2])
    valid = torch.tensor([1, 0, 1, 1, 1, 1, 0, 1]).bool()
    a = group_advantages(r, 4, valid=valid)
    s = math.sqrt(1 / 3)  # std of {1, 0, 0}
    torch.testing.assert_close(a, torch.tensor([2 / 3 / (s + 1e-6), 0, -1 / 3 / (s + 1e-6), -1 / 3 / (s + 1e-6),
                                                0, 0, 0, 0]))
    # all valid: the same as without the mask, for every scale
    full = torch.tensor([1.0, 0, 0, 1, 3, 1, 1, 1])
    for scale in ("group", "batch", "none"):
        torch.testing.assert_close(group_advantages(full, 4, scale, valid=torch.ones(8, dtype=torch.bool)),
                                   group_advantages(full, 4, scale))
