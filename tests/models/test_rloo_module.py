"""method=rloo: the leave-one-out advantages of real rollouts, the sequence loss, the reference only when needed,
D³S on top, and learning."""

from __future__ import annotations

import functools

import lightning.pytorch as pl
import pytest
import torch
from torch.utils.data import DataLoader

from src.losses.rloo import leave_one_out_advantages
from src.models.downsamplers import D3S
from src.models.rloo import RLOOModule
from tests.models.grpo_helpers import CharTokenizer, prompt_batch, share_of_a, tiny_module

TOK = CharTokenizer()


def rloo(**kwargs: object) -> RLOOModule:
    kwargs.setdefault("optimizer", functools.partial(torch.optim.AdamW, lr=1e-2))
    kwargs.setdefault("num_generations", 4)
    return RLOOModule(tiny_module(seed=1).backbone, tokenizer=TOK, reward=share_of_a, max_new_tokens=8, **kwargs)


def test_advantages_are_leave_one_out_and_the_first_epoch_loss_is_minus_their_mean() -> None:
    module = rloo()
    assert module.reference is None  # beta = 0: no reference model is built
    fixed, stats = module.make_generation_batch(prompt_batch(TOK, ["ab", "cde", "f"]))
    rewards = stats["rollout_rewards"].rewards
    torch.testing.assert_close(fixed["advantages"], leave_one_out_advantages(rewards, 4))
    out = module.compute_loss(fixed)
    # ratio 1 at the first epoch: each sequence's loss is −A, averaged over the 12 sequences
    assert float(out.denominator) == 12
    assert float(out.numerator.detach()) == pytest.approx(-float(fixed["advantages"].sum()), abs=1e-5)


def test_the_kl_is_charged_in_the_reward_per_sequence() -> None:
    module = rloo(beta=0.5)
    assert module.reference is not None
    with torch.no_grad():  # move the policy away from the reference, so that the KL is not 0
        for p in module.backbone.parameters():
            p.add_(0.05 * torch.randn_like(p))
    fixed, stats = module.make_generation_batch(prompt_batch(TOK, ["ab", "cde"]))
    mask = fixed["labels"] != -100
    kl = ((fixed["old_logp"] - fixed["ref_logp"]) * mask).sum(-1)
    assert float(kl.abs().max()) > 1e-3
    want = leave_one_out_advantages(stats["rollout_rewards"].rewards - 0.5 * kl, 4)
    torch.testing.assert_close(fixed["advantages"], want, atol=1e-5, rtol=1e-5)
    assert "kl" in module.compute_loss(fixed).metrics


def test_d3s_selects_rloo_rollouts_by_the_variance_of_their_advantages() -> None:
    module = rloo(downsample=D3S(n_init=0.5, n_final=0.5, k_init=1.0, k_final=1.0))
    _, stats = module.make_generation_batch(prompt_batch(TOK, ["ab", "cde", "f", "gh"]))
    assert stats["selected_rollouts"] == 8 and stats["var_a_after"] >= stats["var_a_before"]


def test_rloo_learns_a_trivial_reward() -> None:
    """The share of 'a' in 8-token completions rises from chance (1/14) within 25 generation batches."""
    torch.manual_seed(0)
    module = rloo(num_generations=8)
    loader = DataLoader([prompt_batch(TOK, ["ab", "cde", "f", "gh"])] * 1000, batch_size=None,
                        collate_fn=lambda b: b)
    rewards: list[float] = []

    class Record(pl.Callback):
        def on_train_batch_end(self, trainer: pl.Trainer, *args: object) -> None:
            rewards.append(float(trainer.callback_metrics["train/reward_mean"]))

    trainer = pl.Trainer(max_steps=25, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=[Record()])
    trainer.fit(module, loader)
    start, end = sum(rewards[:3]) / 3, sum(rewards[-3:]) / 3
    assert start < 0.2 and end > start + 0.3, rewards
