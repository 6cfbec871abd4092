"""D³S selection: max-variance subsets proven against brute force; token top-K by |A|·H; the linear schedule."""

from __future__ import annotations

import itertools

import pytest
import torch

from src.losses.d3s import linear_schedule, max_variance_subset, select_rollouts, select_tokens


def _var(x: torch.Tensor) -> float:
    return float(x.double().var(unbiased=False)) if x.numel() else 0.0


def test_worked_example() -> None:
    a = torch.tensor([2.0, 1, 0, 0, -1, -3])
    assert max_variance_subset(a, 3).tolist() == [0, 1, 5]


@pytest.mark.parametrize("seed", range(40))
def test_sort_and_scan_equals_brute_force(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    m = int(torch.randint(1, 9, (1,), generator=g))
    kind = seed % 4
    if kind == 0:
        a = torch.randn(m, generator=g)
    elif kind == 1:  # ties: few distinct values
        a = torch.randint(-2, 3, (m,), generator=g).float()
    elif kind == 2:  # an all-equal group
        a = torch.zeros(m)
    else:  # GRPO-like: ±x and zeros
        a = torch.randint(-1, 2, (m,), generator=g).float() * 0.87
    for n in range(m + 1):
        got = max_variance_subset(a, n)
        assert got.numel() == n and len(set(got.tolist())) == n
        best = max(_var(a[list(c)]) for c in itertools.combinations(range(m), n)) if n else 0.0
        assert _var(a[got]) == pytest.approx(best, abs=1e-12)


def test_cross_and_intra_group_selection() -> None:
    a = torch.tensor([1.0, -1.0, 0.5, -0.5, 0.0, 0.0, 0.0, 0.0])  # two groups of 4; the 2nd all equal
    cross = select_rollouts(a, 4, fraction=0.25)  # 2 of 8 from the pool: the extremes
    assert cross.tolist() == [True, True, False, False, False, False, False, False]
    intra = select_rollouts(a, 4, fraction=0.5, mode="intra")  # 2 per group
    assert intra[:4].tolist() == [True, True, False, False] and int(intra[4:].sum()) == 2
    with pytest.raises(ValueError, match="in \\(0, 1\\]"):
        select_rollouts(a, 4, fraction=0.0)


def test_token_selection_keeps_the_top_abs_advantage_times_entropy() -> None:
    adv = torch.tensor([2.0, -0.5])
    ent = torch.tensor([[0.1, 1.0, 0.5], [4.0, 3.0, 9.0]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    # scores: [0.2, 2.0, 1.0], [2.0, 1.5, (masked)] -> top 2 of 5 tokens: (0,1) and (1,0) tie at 2.0
    got = select_tokens(adv, ent, mask, fraction=0.4)
    assert got.tolist() == [[False, True, False], [True, False, False]]
    assert select_tokens(adv, ent, mask, fraction=1.0).tolist() == mask.bool().tolist()


def test_linear_schedule() -> None:
    assert linear_schedule(0.0, 0.25, 1.0) == 0.25 and linear_schedule(1.0, 0.25, 1.0) == 1.0
    assert linear_schedule(0.5, 0.2, 1.0) == pytest.approx(0.6) and linear_schedule(2.0, 0.2, 1.0) == 1.0
