"""The masked-diffusion forward process and LLaDA SFT loss: the docstring's worked example, the masking rules."""

from __future__ import annotations

import pytest
import torch

from src.kernels import token_logprobs
from src.losses.mdlm import MASK_EPS, forward_mask, mask_probability, mdlm_loss

MASK = 99


def _worked_example() -> tuple[torch.Tensor, ...]:
    logp = torch.tensor([[-1.0, -2.0, 0.0, 0.0], [-0.5, 0.0, 0.0, 0.0]])  # [B=2, T=4]
    masked = torch.tensor([[True, True, False, False], [True, False, False, False]])
    return logp, masked, torch.tensor([0.5, 0.25]), torch.tensor([4, 2])


@pytest.mark.parametrize(("reduction", "want"), [("sum", 2.5), ("mean", 1.25)])
def test_worked_example(reduction: str, want: float) -> None:
    logp, masked, p_mask, ans = _worked_example()
    loss, stats = mdlm_loss(logp, masked, p_mask, ans, reduction=reduction)
    assert loss.item() == pytest.approx(want)  # (3 / (0.5·4) + 0.5 / (0.25·2)) = 1.5 + 1.0
    assert stats["n_sequences"].item() == 2 and stats["n_masked"].item() == 3
    assert stats["masked_nll_sum"].item() == pytest.approx(3.5)


def test_unmasked_positions_never_count_even_with_nonzero_logp() -> None:
    logp, masked, p_mask, ans = _worked_example()
    logp = logp.clone()
    logp[~masked] = -7.0
    assert mdlm_loss(logp, masked, p_mask, ans)[0].item() == pytest.approx(2.5)


def test_a_sequence_without_answer_is_not_counted() -> None:
    logp, masked, p_mask, _ = _worked_example()
    loss, stats = mdlm_loss(logp, masked & torch.tensor([[True], [False]]), p_mask, torch.tensor([4, 0]))
    assert loss.item() == pytest.approx(1.5) and stats["n_sequences"].item() == 1


def test_per_token_ce_from_the_fused_kernel_matches_plain_logits() -> None:
    """The module's path: CE of masked positions from hidden states + output weight (never [B, T, V])."""
    g = torch.Generator().manual_seed(0)
    hidden, weight = torch.randn(2, 4, 8, generator=g), torch.randn(11, 8, generator=g)
    clean = torch.randint(0, 11, (2, 4), generator=g)
    masked = torch.tensor([[True, False, True, False], [False, True, True, True]])
    labels = clean.masked_fill(~masked, -100)
    logp = token_logprobs(hidden.flatten(0, 1), weight, labels.flatten()).view(2, 4)
    p_mask, ans = torch.tensor([0.3, 0.9]), torch.tensor([4, 3])
    got, _ = mdlm_loss(logp, masked, p_mask, ans)
    ce = torch.nn.functional.cross_entropy((hidden @ weight.T).transpose(1, 2), clean, reduction="none")  # [B, T]
    want = ((ce * masked).sum(1) / (p_mask * ans)).sum()
    assert got.item() == pytest.approx(want.item(), rel=1e-5)


def test_mask_probability_spans_eps_to_one() -> None:
    assert mask_probability(torch.tensor([0.0, 1.0])).tolist() == pytest.approx([MASK_EPS, 1.0])


def test_forward_mask_never_touches_the_prompt_and_is_seeded() -> None:
    ids = torch.arange(2 * 50).view(2, 50) + 100  # no clean token equals [MASK]
    maskable = torch.zeros(2, 50, dtype=torch.bool)
    maskable[:, 10:] = True  # 10 prompt tokens per row
    a = forward_mask(ids, maskable, MASK, generator=torch.Generator().manual_seed(3))
    b = forward_mask(ids, maskable, MASK, generator=torch.Generator().manual_seed(3))
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    noisy, masked, p_mask = a
    assert torch.equal(noisy[:, :10], ids[:, :10]) and not masked[:, :10].any()
    assert torch.equal(noisy == MASK, masked) and torch.equal(noisy[~masked], ids[~masked])
    assert ((p_mask >= MASK_EPS) & (p_mask <= 1)).all()


def test_forward_mask_rate_follows_p_mask() -> None:
    """One t per sequence: each row's masked fraction is close to its own p_mask (4000 positions per row)."""
    ids = torch.zeros(8, 4000, dtype=torch.long)
    _, masked, p_mask = forward_mask(ids, torch.ones_like(ids, dtype=torch.bool), MASK,
                                     generator=torch.Generator().manual_seed(1))
    assert torch.allclose(masked.float().mean(1), p_mask, atol=0.03)
    assert p_mask.std() > 0.1  # the rows drew different t
