"""Token cross-entropy against the worked example in its docstring (src/losses/token_ce.py)."""

from __future__ import annotations

import pytest
import torch

from src.losses.token_ce import token_cross_entropy


def test_worked_example_mean_sum_and_counts() -> None:
    logp, labels = torch.tensor([-1.0, -3.0, 0.0]), torch.tensor([5, 7, -100])
    mean, stats = token_cross_entropy(logp, labels)
    total, _ = token_cross_entropy(logp, labels, reduction="sum")
    assert float(mean) == 2.0 and float(total) == 4.0
    assert int(stats["n_tokens"]) == 2 and float(stats["nll_sum"]) == 4.0
    assert not stats["nll_sum"].requires_grad


def test_gradient_is_minus_mask_over_count() -> None:
    logp = torch.tensor([-1.0, -3.0, -0.5], requires_grad=True)
    token_cross_entropy(logp, torch.tensor([5, 7, -100]))[0].backward()
    torch.testing.assert_close(logp.grad, torch.tensor([-0.5, -0.5, 0.0]))


def test_all_ignored_is_zero_not_nan_and_bad_reduction_is_refused() -> None:
    loss, stats = token_cross_entropy(torch.zeros(3), torch.full((3,), -100))
    assert float(loss) == 0.0 and int(stats["n_tokens"]) == 0
    with pytest.raises(ValueError, match="reduction"):
        token_cross_entropy(torch.zeros(1), torch.zeros(1, dtype=torch.long), reduction="none")
