"""DPO losses and critical-token scores against the worked examples in their docstrings."""

from __future__ import annotations

import math

import pytest
import torch

from src.losses.critical_tokens import contrastive_token_scores
from src.losses.dpo import DPO_LOSS_TYPES, dpo_loss, dpo_pair_losses

H_CHOSEN, H_REJECTED = torch.tensor([2.0]), torch.tensor([-1.0])  # h = 3, β h = 0.3 at β = 0.1


@pytest.mark.parametrize(("loss_type", "eps", "expected"), [
    ("sigmoid", 0.0, 0.554355), ("ipo", 0.0, 4.0), ("hinge", 0.0, 0.7),
    ("conservative", 0.1, 0.584355), ("robust", 0.1, 0.516855),
])
def test_pair_losses_match_the_worked_example(loss_type: str, eps: float, expected: float) -> None:
    got = dpo_pair_losses(H_CHOSEN, H_REJECTED, beta=0.1, loss_type=loss_type, label_smoothing=eps)
    assert float(got) == pytest.approx(expected, abs=1e-6)


def test_sigmoid_gradient_wrt_each_log_ratio_and_each_token_logprob() -> None:
    c, r = H_CHOSEN.clone().requires_grad_(), H_REJECTED.clone().requires_grad_()
    dpo_pair_losses(c, r, beta=0.1).sum().backward()
    g = 0.1 * (1 / (1 + math.exp(0.3)))  # β σ(−βh)
    assert float(c.grad) == pytest.approx(-g, abs=1e-7) and float(r.grad) == pytest.approx(g, abs=1e-7)
    # per token: ∂L/∂logp_t = ∓β σ(−βh) w_t on response tokens, 0 on masked ones; the reference gets none
    logp_c = torch.tensor([[-1.0, -2.0, -5.0]], requires_grad=True)
    logp_r = torch.tensor([[-1.0, -3.0, -5.0]], requires_grad=True)
    ref_c = torch.tensor([[-1.5, -1.5, 0.0]], requires_grad=True)
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    w_r = torch.tensor([[0.2, 1.0, 1.0]])
    loss, _ = dpo_loss(logp_c, logp_r, ref_c, torch.tensor([[-2.0, -2.0, 0.0]]), mask, mask, beta=0.1,
                       rejected_weights=w_r)
    loss.backward()
    g = 0.1 / (1 + math.exp(0.08))  # h = 0.8 (the token-weighted example)
    torch.testing.assert_close(logp_c.grad, torch.tensor([[-g, -g, 0.0]]))
    torch.testing.assert_close(logp_r.grad, torch.tensor([[0.2 * g, g, 0.0]]))
    assert ref_c.grad is None or float(ref_c.grad.abs().sum()) == 0.0


def test_token_weighted_example_and_all_ones_is_sequence_dpo_exactly() -> None:
    mask = torch.ones(1, 2)
    args = (torch.tensor([[-1.0, -2.0]]), torch.tensor([[-1.0, -3.0]]), torch.tensor([[-1.5, -1.5]]),
            torch.tensor([[-2.0, -2.0]]), mask, mask)
    loss, metrics = dpo_loss(*args, beta=0.1, rejected_weights=torch.tensor([[0.2, 1.0]]))
    assert float(loss) == pytest.approx(0.653946, abs=1e-6)
    assert float(metrics["rewards/margin"]) == pytest.approx(0.08, abs=1e-7)
    g = torch.Generator().manual_seed(0)
    rand = [torch.randn(4, 7, generator=g) for _ in range(4)]
    m = (torch.rand(4, 7, generator=g) > 0.3).float()
    for loss_type in DPO_LOSS_TYPES:
        seq, _ = dpo_loss(*rand, m, m, beta=0.3, loss_type=loss_type, label_smoothing=0.1)
        ones, _ = dpo_loss(*rand, m, m, beta=0.3, loss_type=loss_type, label_smoothing=0.1,
                           chosen_weights=torch.ones(4, 7), rejected_weights=torch.ones(4, 7))
        assert torch.equal(seq, ones), loss_type


def test_metrics_and_bad_settings() -> None:
    mask = torch.ones(2, 1)
    _, m = dpo_loss(torch.tensor([[-1.0], [-3.0]]), torch.tensor([[-2.0], [-1.0]]), torch.full((2, 1), -2.0),
                    torch.full((2, 1), -2.0), mask, mask, beta=0.5)
    # chosen rewards 0.5·[1, −1], rejected 0.5·[0, 1]: accuracy 1/2, margin mean (0.5 + (−1)) / 2
    assert float(m["rewards/accuracy"]) == 0.5 and float(m["rewards/margin"]) == pytest.approx(-0.25)
    assert float(m["logps/chosen"]) == pytest.approx(-2.0)
    with pytest.raises(ValueError, match="beta must be > 0"):
        dpo_pair_losses(H_CHOSEN, H_REJECTED, beta=0.0)
    with pytest.raises(ValueError, match="not one of"):
        dpo_pair_losses(H_CHOSEN, H_REJECTED, beta=0.1, loss_type="cdpo")
    with pytest.raises(ValueError, match="label_smoothing"):
        dpo_pair_losses(H_CHOSEN, H_REJECTED, beta=0.1, loss_type="robust", label_smoothing=0.5)


def test_contrastive_scores_match_the_worked_example_and_dense_logits() -> None:
    eye = torch.eye(3)  # d = V = 3: hidden states are the logits themselves
    z_pos, z_neg = torch.tensor([[2.0, 0, 0]] * 3), torch.tensor([[0.0, 2, 0]] * 3)
    s = contrastive_token_scores(z_pos, z_neg, eye, eye, torch.tensor([0, 1, 2]), impl="chunked")
    torch.testing.assert_close(s, torch.tensor([0.979629, 0.002428, 0.017942]), atol=1e-6, rtol=0)
    # separate heads, biases, b = 2, ignored rows: equals the dense formula
    g = torch.Generator().manual_seed(0)
    hp, hn = torch.randn(5, 4, generator=g), torch.randn(5, 4, generator=g)
    wp, wn = torch.randn(11, 4, generator=g), torch.randn(11, 4, generator=g)
    bp, bn = torch.randn(11, generator=g), torch.randn(11, generator=g)
    y = torch.tensor([3, -100, 0, 10, 7])
    got = contrastive_token_scores(hp, hn, wp, wn, y, b=2.0, bias_pos=bp, bias_neg=bn)
    dense = torch.softmax(3 * (hp @ wp.T + bp) - 2 * (hn @ wn.T + bn), -1)  # [5, 11]
    want = dense.gather(1, y.clamp(min=0)[:, None])[:, 0] * (y != -100)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)


def _dense_scores(hp, hn, wp, wn, y, b, bp=None, bn=None, ignore_index=-100):
    """softmax((1 + b)·z_pos − b·z_neg)[y] with the [.., V] logits written out; 0 on ignored targets."""
    zp, zn = hp @ wp.T, hn @ wn.T  # [..., V]
    zp = zp if bp is None else zp + bp
    zn = zn if bn is None else zn + bn
    s = torch.softmax((1 + b) * zp - b * zn, -1).gather(-1, y.clamp(min=0)[..., None])[..., 0]
    return s * (y != ignore_index)


@pytest.mark.parametrize("head", ["shared", "distinct", "distinct_swapped"])
@pytest.mark.parametrize("b", [0.0, 0.5, 2.0])
def test_contrastive_scores_equal_dense_logits_for_every_head_and_strength(head: str, b: float) -> None:
    """[B, T, d] hidden states (not only [N, d]), V != d, a random head: the one-product path of a shared head and
    the concatenated path of two heads (in both argument orders: the shared-head test must not depend on which
    tensor sits lower in memory) both equal the dense formula."""
    g = torch.Generator().manual_seed(1)
    hp, hn = torch.randn(2, 3, 4, generator=g), torch.randn(2, 3, 4, generator=g)  # [B, T, d]
    wp, wn = torch.randn(7, 4, generator=g), torch.randn(7, 4, generator=g)  # [V, d]
    if head == "shared":
        wn = wp
    elif head == "distinct_swapped":
        wp, wn = wn, wp
    y = torch.tensor([[0, 6, 3], [1, -100, 5]])  # [B, T]
    got = contrastive_token_scores(hp, hn, wp, wn, y, b=b)
    assert got.shape == (2, 3)
    torch.testing.assert_close(got, _dense_scores(hp, hn, wp, wn, y, b), atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("which", ["pos", "neg", "both"])
def test_contrastive_scores_with_one_bias_or_both(which: str) -> None:
    """A model with an output bias on one side only (the other counts as a zero bias of length V, not d)."""
    g = torch.Generator().manual_seed(2)
    hp, hn = torch.randn(5, 3, generator=g), torch.randn(5, 3, generator=g)
    wp, wn = torch.randn(8, 3, generator=g), torch.randn(8, 3, generator=g)
    bp = torch.randn(8, generator=g) if which in ("pos", "both") else None
    bn = torch.randn(8, generator=g) if which in ("neg", "both") else None
    y = torch.tensor([0, 7, 2, 5, 4])
    got = contrastive_token_scores(hp, hn, wp, wn, y, b=1.5, bias_pos=bp, bias_neg=bn)
    torch.testing.assert_close(got, _dense_scores(hp, hn, wp, wn, y, 1.5, bp, bn), atol=1e-6, rtol=1e-5)


def test_contrastive_scores_ignore_index_inside_the_vocabulary_zeroes_only_that_id() -> None:
    g = torch.Generator().manual_seed(3)
    hp, hn, w = torch.randn(4, 3, generator=g), torch.randn(4, 3, generator=g), torch.randn(6, 3, generator=g)
    y = torch.tensor([1, 3, 5, 3])
    got = contrastive_token_scores(hp, hn, w, w, y, ignore_index=3)
    assert got[1] == 0 and got[3] == 0 and bool((got[[0, 2]] > 0).all())
    torch.testing.assert_close(got, _dense_scores(hp, hn, w, w, y, 1.0, ignore_index=3), atol=1e-6, rtol=1e-5)


def test_contrastive_scores_refuse_bad_input_and_keep_no_graph() -> None:
    w = torch.randn(5, 3, requires_grad=True)
    h = torch.randn(4, 3, requires_grad=True)
    y = torch.tensor([0, 1, 2, 3])
    for a, c in [(torch.randn(4, 3), torch.randn(5, 3)), (torch.randn(5, 3), torch.randn(4, 3))]:
        with pytest.raises(ValueError, match="hidden states disagree"):
            contrastive_token_scores(a, c, w, w, y)
    with pytest.raises(ValueError, match="b must be >= 0"):
        contrastive_token_scores(h, h, w, w, y, b=-0.5)
    with pytest.raises(TypeError):  # b is keyword-only: a positional 1.0 must not be read as something else
        contrastive_token_scores(h, h, w, w, y, 1.0)  # type: ignore[misc]
    s = contrastive_token_scores(h, h, w, w, y, b=0.0)  # b = 0: plain softmax of the positive model
    assert not s.requires_grad  # scores are fixed weights of the DPO loss: no graph back into either model
    torch.testing.assert_close(s, torch.softmax(h @ w.T, -1).gather(1, y[:, None])[:, 0].detach())
