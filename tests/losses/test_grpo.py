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


def _runtime(s: str) -> str:
    """The same text as a fresh, non-interned string, as a value read from a Hydra config is: an `is` comparison
    with the literal (instead of `==`) would fail on it."""
    return "".join(list(s))


@pytest.mark.parametrize("masked", [False, True])
def test_group_scaling_at_small_groups_and_a_large_eps(masked: bool) -> None:
    """G = 2 (std of two rewards, not 1), G = 1 (scale 1 and one advantage per rollout), eps added to the scale."""
    valid = (lambda n: torch.ones(n, dtype=torch.bool)) if masked else (lambda n: None)
    r2 = torch.tensor([1.0, 0.0, 2.0, 2.0])
    s2 = math.sqrt(0.5)  # unbiased std of {1, 0}
    torch.testing.assert_close(group_advantages(r2, 2, _runtime("group"), valid=valid(4)),
                               torch.tensor([0.5, -0.5, 0, 0]) / (s2 + 1e-6))
    torch.testing.assert_close(group_advantages(r2, 2, "group", eps=0.5, valid=valid(4)),
                               torch.tensor([0.5, -0.5, 0, 0]) / (s2 + 0.5))
    one = group_advantages(torch.tensor([3.0, 5.0]), 1, "group", valid=valid(2))
    assert torch.equal(one, torch.zeros(2))  # one rollout per group: centred 0, two advantages
    single = group_advantages(torch.tensor([3.0]), 1, "batch", valid=valid(1))
    assert torch.equal(single, torch.zeros(1))  # a batch of one: scale 1, not the NaN std of one value
    two = group_advantages(torch.tensor([1.0, 0.0]), 2, _runtime("batch"), valid=valid(2))  # a batch of two: std
    torch.testing.assert_close(two, torch.tensor([0.5, -0.5]) / (s2 + 1e-6))


def test_masked_scaling_with_two_one_and_no_valid_rollouts() -> None:
    """Two valid rollouts: unbiased std over them (divide by n − 1 = 1); under `batch`, one or no valid rollout
    gives scale 1 and advantages 0, never NaN."""
    a = group_advantages(torch.tensor([1.0, 0.0, 7.0, 7.0]), 4, "group",
                         valid=torch.tensor([True, True, False, False]))
    s = math.sqrt(0.5)
    torch.testing.assert_close(a, torch.tensor([0.5 / (s + 1e-6), -0.5 / (s + 1e-6), 0, 0]))
    for v in ([True, False, False, False], [False, False, False, False]):
        b = group_advantages(torch.tensor([1.0, 0.0, 7.0, 7.0]), 4, "batch", valid=torch.tensor(v))
        assert torch.equal(b, torch.zeros(4))


def test_surrogate_on_both_sides_of_the_clip_for_both_signs() -> None:
    """−min(ρA, clip(ρ)A) at ρ ∈ {0.5, 1.5} and A = ±1 (ε_low 0.1, ε_high 0.3): the unclipped term wins when it is
    the more pessimistic one (ρ = 0.5, A = +1; ρ = 1.5, A = −1), the clipped one otherwise."""
    logp = torch.log(torch.tensor([[0.5, 1.5], [0.5, 1.5]]))
    got = clipped_surrogate(logp, torch.zeros(2, 2), torch.tensor([1.0, -1.0]), eps_low=0.1, eps_high=0.3)
    torch.testing.assert_close(got, torch.tensor([[-0.5, -1.3], [0.9, 1.5]]))


def test_normalisers_return_their_exact_numerator_and_denominator() -> None:
    """bnpo is a token mean per micro-batch (denominator 1), dapo one over the whole step (the token count), and
    dr_grpo divides by the row width when no L_max is given: the (numerator, denominator) pairs, not only their
    ratio, decide how micro-batches add up."""
    per_token = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])  # N = 2, T = 3
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    num, den = normalise(per_token, mask, _runtime("bnpo"))
    assert (float(num), float(den)) == pytest.approx((7 / 3, 1.0))
    num, den = normalise(per_token, mask, "dapo")
    assert (float(num), float(den)) == (7.0, 3.0)
    num, den = normalise(per_token, mask, _runtime("dr_grpo"))
    assert (float(num), float(den)) == pytest.approx((7 / 3, 2.0))  # Σ / T, over N sequences
    num, den = normalise(per_token, mask, _runtime("grpo"))
    assert (float(num), float(den)) == pytest.approx((1.5 + 4.0, 2.0))
    one = torch.tensor([[1, 0, 0], [0, 0, 0]])  # one token in the micro-batch, a completion with none
    assert [float(x) for x in normalise(per_token, one, "grpo")] == [1.0, 2.0]  # the empty row adds 0, not NaN
    assert [float(x) for x in normalise(per_token, one, "bnpo")] == [1.0, 1.0]
    assert [float(x) for x in normalise(per_token, torch.zeros(2, 3), "bnpo")] == [0.0, 1.0]  # nothing to learn
