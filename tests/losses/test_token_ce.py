"""token_cross_entropy: the worked example of its docstring, the all-ignored batch, and its gradient."""

from __future__ import annotations

import pytest
import torch

from src.losses.token_ce import token_cross_entropy

# The docstring's worked example: the third row carries no label, so the kernel gave it logp 0.
LOGP = [-1.0, -3.0, 0.0]
LABELS = [5, 7, -100]


@pytest.mark.parametrize(("reduction", "want"), [("mean", 2.0), ("sum", 4.0)])
def test_worked_example(reduction: str, want: float) -> None:
    loss, stats = token_cross_entropy(torch.tensor(LOGP), torch.tensor(LABELS), reduction=reduction)
    assert loss.item() == pytest.approx(want)  # mean (1 + 3) / 2, sum 1 + 3
    assert stats["nll_sum"].item() == pytest.approx(4.0)
    assert stats["n_tokens"].item() == 2
    assert not stats["nll_sum"].requires_grad and not stats["n_tokens"].requires_grad


def test_an_ignored_row_counts_nothing_even_if_its_logp_is_not_zero() -> None:
    """The mask, not the kernel's zero, keeps an ignored row out of the loss and the token count."""
    loss, stats = token_cross_entropy(torch.tensor([-1.0, -3.0, -50.0]), torch.tensor(LABELS))
    assert loss.item() == pytest.approx(2.0) and stats["n_tokens"].item() == 2


def test_a_custom_ignore_index() -> None:
    loss, stats = token_cross_entropy(torch.tensor(LOGP), torch.tensor([5, 7, 0]), ignore_index=0)
    assert loss.item() == pytest.approx(2.0) and stats["n_tokens"].item() == 2


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_all_ignored_gives_zero_not_nan(reduction: str) -> None:
    logp = torch.zeros(3, requires_grad=True)
    loss, stats = token_cross_entropy(logp, torch.full((3,), -100), reduction=reduction)
    assert loss.item() == 0.0 and not torch.isnan(loss)
    assert stats["n_tokens"].item() == 0 and stats["nll_sum"].item() == 0.0
    loss.backward()
    assert torch.equal(logp.grad, torch.zeros(3))  # a fully masked micro-batch adds no (NaN) gradient


@pytest.mark.parametrize(("reduction", "n"), [("mean", 2.0), ("sum", 1.0)])
def test_gradient_is_minus_mask_over_n(reduction: str, n: float) -> None:
    """d loss / d logp = -mask / n_tokens for the mean, -mask for the sum."""
    logp = torch.tensor(LOGP, requires_grad=True)
    loss, _ = token_cross_entropy(logp, torch.tensor(LABELS), reduction=reduction)
    loss.backward()
    mask = torch.tensor([1.0, 1.0, 0.0])
    torch.testing.assert_close(logp.grad, -mask / n, atol=0, rtol=0)


def test_unknown_reduction_is_refused() -> None:
    with pytest.raises(ValueError, match="reduction='none' is not 'mean' or 'sum'"):
        token_cross_entropy(torch.tensor(LOGP), torch.tensor(LABELS), reduction="none")


def test_an_ignore_index_inside_the_vocabulary_masks_that_id_only() -> None:
    """ignore_index=6: ids below it (5) count as much as ids above it (7); only 6 is masked."""
    loss, stats = token_cross_entropy(torch.tensor(LOGP), torch.tensor([5, 7, 6]), ignore_index=6)
    assert loss.item() == pytest.approx(2.0) and stats["n_tokens"].item() == 2


def test_one_label_token_is_its_own_mean() -> None:
    loss, _ = token_cross_entropy(torch.tensor([-3.0, 0.0]), torch.tensor([4, -100]))
    assert loss.item() == pytest.approx(3.0)
