"""RLOO's pure functions: the docstring's worked example, and TRL's RLOOTrainer formulas written out per element."""

from __future__ import annotations

import math

import pytest
import torch

from src.losses.rloo import leave_one_out_advantages, normalize_advantages, sequence_clipped_surrogate, sequence_kl


def test_leave_one_out_matches_the_worked_example() -> None:
    a = leave_one_out_advantages(torch.tensor([1.0, 0.0, 0.0, 1.0]), 4)
    torch.testing.assert_close(a, torch.tensor([2 / 3, -2 / 3, -2 / 3, 2 / 3]))
    kl = torch.tensor([1.0, 0.0, 0.0, 0.0])
    a = leave_one_out_advantages(torch.tensor([1.0, 0.0, 0.0, 1.0]) - 0.1 * kl, 4)
    torch.testing.assert_close(a, torch.tensor([0.5667, -0.6333, -0.6333, 0.7]), atol=1e-4, rtol=0)


def test_advantages_equal_trls_per_element_formulas() -> None:
    """TRL: baseline_i = (Σ_group r − r_i) / (G − 1), A = r − baseline; with normalize_advantages,
    (A − mean) / (std + 1e-4), std unbiased, over the generation batch. Written here element by element."""
    g = 3
    rewards = [0.2, 1.0, 0.5, 0.0, 0.0, 0.7]
    want = []
    for start in range(0, len(rewards), g):
        group = rewards[start:start + g]
        want += [r - (sum(group) - r) / (g - 1) for r in group]
    got = leave_one_out_advantages(torch.tensor(rewards, dtype=torch.float64), g)
    torch.testing.assert_close(got, torch.tensor(want, dtype=torch.float64))
    mean = sum(want) / len(want)
    std = math.sqrt(sum((x - mean) ** 2 for x in want) / (len(want) - 1))
    torch.testing.assert_close(normalize_advantages(got), torch.tensor([(x - mean) / (std + 1e-4) for x in want],
                                                                       dtype=torch.float64))


def test_dropped_rollouts_leave_the_baseline_and_get_no_advantage() -> None:
    rewards = torch.tensor([1.0, 0.0, 5.0, 0.0, 1.0, 1.0, 0.0, 0.0])
    valid = torch.tensor([True, True, False, True, True, False, False, False])
    a = leave_one_out_advantages(rewards, 4, valid=valid)
    # group 1 counts rollouts 0, 1, 3 (rewards 1, 0, 0): A_0 = 1 − 0 = 1, A_1 = 0 − 0.5, A_3 = 0 − 0.5
    torch.testing.assert_close(a[:4], torch.tensor([1.0, -0.5, 0.0, -0.5]))
    torch.testing.assert_close(a[4:], torch.zeros(4))  # one valid rollout: no contrast, no advantage
    with pytest.raises(ValueError, match="at least 2"):
        leave_one_out_advantages(rewards, 1)


def test_sequence_loss_matches_the_worked_example_and_trls_formula() -> None:
    """ρ from the summed token log-ratios of the masked tokens; loss −min(ρA, clip(ρ)A) per sequence."""
    old = torch.zeros(2, 3)
    logp = torch.tensor([[math.log(1.5), 0.0, 9.0], [math.log(0.5), 0.0, 9.0]])  # the 3rd token is masked
    mask = torch.tensor([[True, True, False], [True, True, False]])
    per_seq = sequence_clipped_surrogate(logp, old, torch.tensor([1.0, -1.0]), mask, 0.2, 0.2)
    torch.testing.assert_close(per_seq, torch.tensor([-1.2, 0.8]))
    assert float(per_seq.mean()) == pytest.approx(-0.2)
    # TRL: coef_1 = exp(logps − old_logps) with logps = (per_token_logps * mask).sum(1), asymmetric clip bounds
    a, lo, hi = torch.tensor([0.7, -0.3]), 0.1, 0.3
    r = torch.exp((logp * mask).sum(1) - (old * mask).sum(1))
    want = -torch.minimum(r * a, torch.clamp(r, 1 - lo, 1 + hi) * a)
    torch.testing.assert_close(sequence_clipped_surrogate(logp, old, a, mask, lo, hi), want)


def test_sequence_kl_sums_the_completion_tokens_only() -> None:
    old, ref = torch.tensor([[-1.0, -2.0, -3.0]]), torch.tensor([[-1.5, -1.0, -9.0]])
    mask = torch.tensor([[True, True, False]])
    torch.testing.assert_close(sequence_kl(old, ref, mask), torch.tensor([0.5 - 1.0]))


def test_two_rollouts_are_enough_for_a_baseline_and_for_normalising() -> None:
    """G = 2 (TRL's default): each rollout's baseline is the other's reward; two valid rollouts normalise."""
    a = leave_one_out_advantages(torch.tensor([1.0, 0.0]), 2)
    torch.testing.assert_close(a, torch.tensor([1.0, -1.0]))
    valid = torch.tensor([True, False, False, True])
    b = leave_one_out_advantages(torch.tensor([1.0, 5.0, 7.0, 0.0]), 2, valid=valid)  # one valid rollout per group
    torch.testing.assert_close(b, torch.zeros(4))
    std = math.sqrt(2.0)  # of [1, −1], unbiased
    torch.testing.assert_close(normalize_advantages(a), torch.tensor([1 / (std + 1e-4), -1 / (std + 1e-4)]))
    with pytest.raises(ValueError, match="do not form groups"):
        leave_one_out_advantages(torch.zeros(5), 2)


def test_the_sequence_ratio_is_new_over_old_with_the_default_clip() -> None:
    """Old log-probs that are not 0: row 1 ρ = exp(Σ (logp − old)) = exp(−1 − (−1.5)) = e^0.5 ≈ 1.65, clipped at
    1.2 by default for A > 0; row 2 ρ = exp(−ln 2) = 0.5 for A < 0, clipped at 0.8."""
    logp = torch.tensor([[-0.5, -0.5], [-1.0, -1.0]])
    half = math.log(2) / 2
    old = torch.tensor([[-0.75, -0.75], [-1.0 + half, -1.0 + half]])
    mask = torch.ones(2, 2, dtype=torch.bool)
    got = sequence_clipped_surrogate(logp, old, torch.tensor([1.0, -1.0]), mask)
    torch.testing.assert_close(got, torch.tensor([-1.2, 0.8]))


def test_the_pessimistic_side_keeps_the_unclipped_term() -> None:
    """ρ = 1.5 with A = −1: the unclipped ρA = −1.5 is the smaller term, so the loss is 1.5 (not the clipped 1.2)."""
    logp, old = torch.tensor([[math.log(1.5)]]), torch.zeros(1, 1)
    got = sequence_clipped_surrogate(logp, old, torch.tensor([-1.0]), torch.ones(1, 1, dtype=torch.bool))
    torch.testing.assert_close(got, torch.tensor([1.5]))


def test_normalising_centres_advantages_whose_mean_is_not_zero() -> None:
    a = torch.tensor([1.0, 2.0, 4.0])
    std = math.sqrt(((1 - 7 / 3) ** 2 + (2 - 7 / 3) ** 2 + (4 - 7 / 3) ** 2) / 2)
    torch.testing.assert_close(normalize_advantages(a), (a - 7 / 3) / (std + 1e-4))


def test_normalising_one_valid_rollout_gives_no_advantage_not_nan() -> None:
    got = normalize_advantages(torch.tensor([0.5, 0.0, 0.0]), torch.tensor([True, False, False]))
    torch.testing.assert_close(got, torch.zeros(3))
