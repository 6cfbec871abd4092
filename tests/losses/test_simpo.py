"""SimPO's loss: the docstring's worked example and TRL's CPO `loss_type="simpo"` formula written out per element."""

from __future__ import annotations

import math

import pytest
import torch

from src.losses.simpo import simpo_pair_losses


def test_simpo_matches_the_worked_example() -> None:
    got = simpo_pair_losses(torch.tensor([-1.0, -1.0, -1.0]), torch.tensor([-1.5, -2.0, -2.0]), beta=2.0, gamma=1.0)
    torch.testing.assert_close(got[:2], torch.tensor([math.log(2), 0.313262]), atol=1e-6, rtol=0)
    smoothed = simpo_pair_losses(torch.tensor([-1.0]), torch.tensor([-2.0]), 2.0, 1.0, label_smoothing=0.1)
    assert float(smoothed) == pytest.approx(0.413262, abs=1e-6)


def test_simpo_equals_trls_cpo_simpo_with_its_gamma_convention() -> None:
    """TRL: logits = (chosen − rejected) − simpo_gamma / beta; loss = −logσ(β·logits)(1 − ε) − logσ(−β·logits)ε,
    on length-averaged log-probs (`cpo_alpha=0`: no NLL term)."""
    chosen, rejected = [-0.7, -2.3, -1.1], [-1.9, -0.4, -1.1]
    beta, gamma, eps = 2.5, 1.4, 0.05
    want = []
    for c, r in zip(chosen, rejected):
        logits = (c - r) - gamma / beta
        ls = lambda x: -math.log1p(math.exp(-x))  # noqa: E731 (log σ)
        want.append(-ls(beta * logits) * (1 - eps) - ls(-beta * logits) * eps)
    got = simpo_pair_losses(torch.tensor(chosen, dtype=torch.float64), torch.tensor(rejected, dtype=torch.float64),
                            beta, gamma, eps)
    torch.testing.assert_close(got, torch.tensor(want, dtype=torch.float64))


@pytest.mark.parametrize(("setting", "match"), [
    ({"beta": 0.0}, "beta must be > 0"), ({"beta": -1.0}, "beta must be > 0"),
    ({"label_smoothing": 0.5}, "label_smoothing"), ({"label_smoothing": 0.7}, "label_smoothing"),
    ({"label_smoothing": -0.1}, "label_smoothing")])
def test_bad_settings_are_one_clear_error(setting: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        simpo_pair_losses(torch.zeros(1), torch.zeros(1), **setting)


def test_small_positive_settings_are_accepted_and_the_defaults_are_the_configs() -> None:
    """β = 0.5 and ε = 0 are valid; the defaults are conf/method/simpo.yaml's (β 2, γ 1)."""
    c, r = torch.tensor([-1.0, -0.2]), torch.tensor([-1.5, -0.9])
    assert torch.isfinite(simpo_pair_losses(c, r, beta=0.5, label_smoothing=0.0)).all()
    torch.testing.assert_close(simpo_pair_losses(c, r), simpo_pair_losses(c, r, beta=2.0, gamma=1.0))
