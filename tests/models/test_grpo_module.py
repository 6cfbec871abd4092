"""method=grpo: rollout batches, the fixed-rollout loss, down-sampling counts, failures, and learning."""

from __future__ import annotations

import functools
import math

import lightning.pytorch as pl
import pytest
import torch
from torch.utils.data import DataLoader

from src.losses.d3s import kept_count
from src.models.logprobs import batch_logprobs
from src.models.rollouts import completion_mask, left_pad, rollout_batch
from src.rewards.combine import RewardSet
from tests.models.grpo_helpers import CharTokenizer, FixedRolloutGRPO, prompt_batch, share_of_a, tiny_module

TOK = CharTokenizer()


def test_rollout_rows_score_like_the_row_alone() -> None:
    """Left-padded prompts + right-padded completions: each row's completion log-probs equal the unpadded row's."""
    torch.manual_seed(0)
    model = tiny_module().backbone.eval()
    batch = prompt_batch(TOK, ["abc", "d"])
    ids, mask = left_pad(batch["prompt_input_ids"], batch["prompt_attention_mask"], TOK.pad_id)
    assert ids.tolist() == [[2, 3, 4], [0, 0, 5]] and mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    new = torch.tensor([[6, 1, 7], [8, 9, 10]])  # row 0 stops at its end token; row 1 is truncated
    new_mask = completion_mask(new, (TOK.eos_id,))
    assert new_mask.tolist() == [[True, True, False], [True, True, True]]
    rb = rollout_batch(ids, mask, new, new_mask, TOK.pad_id)
    logp = batch_logprobs(model, rb).logp  # [2, 5]
    for row, full in enumerate([[2, 3, 4, 6, 1], [5, 8, 9, 10]]):
        alone = {"input_ids": torch.tensor([full[:-1]]), "labels": torch.tensor([full[1:]])}
        n_prompt = 3 if row == 0 else 1
        alone["labels"][0, : n_prompt - 1] = -100
        ref = batch_logprobs(model, alone).logp[0]
        got = logp[row][rb["labels"][row] != -100]
        torch.testing.assert_close(got, ref[alone["labels"][0] != -100], atol=1e-5, rtol=1e-5)


def test_first_epoch_loss_is_minus_the_mean_advantage_per_token() -> None:
    """ratio = 1 at the first PPO epoch, so the dapo loss is −Σ_i n_i·A_i / Σ_i n_i (n_i kept tokens of i)."""
    module = FixedRolloutGRPO(tiny_module().backbone, tokenizer=TOK, reward=share_of_a, num_generations=4,
                              max_new_tokens=8, optimizer=functools.partial(torch.optim.SGD, lr=0.0))
    fixed, stats = module.make_generation_batch(prompt_batch(TOK, ["ab", "c"]))
    out = module.compute_loss(fixed)
    n = fixed["loss_mask"].sum(-1).double()
    expected = -(n * fixed["advantages"].double()).sum() / n.sum()
    assert float(out.numerator.detach() / out.denominator) == pytest.approx(float(expected), abs=1e-6)
    assert stats["kept_rollouts"] == 8 and stats["var_a_before"] > 0


def test_rollouts_sampled_at_a_temperature_are_scored_at_it() -> None:
    """At T = 0.5 the rollouts come from softmax(z / 0.5): old log-probs, the loss's log-probs and the reference's
    are of that policy (TRL divides the logits by T too), so the first epoch's ratio is 1 and KL to an unchanged
    reference 0."""
    module = tiny_module(num_generations=4, max_new_tokens=6, temperature=0.5, beta=0.1, reference="copy")
    fixed, _ = module.make_generation_batch(prompt_batch(TOK, ["ab", "c"]))
    keys = ("input_ids", "attention_mask", "position_ids")
    with torch.no_grad():  # the definition, logits materialised: log softmax(z / T)[label]
        logits = module.backbone(**{k: fixed[k] for k in keys}) @ module.backbone.output_weight.T  # [n, T, V]
        labels = fixed["labels"]
        want = (logits / 0.5).log_softmax(-1).gather(-1, labels.clamp(min=0)[..., None])[..., 0]
    m = labels != -100
    torch.testing.assert_close(fixed["old_logp"][m], want[m], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(fixed["ref_logp"][m], want[m], atol=1e-5, rtol=1e-5)
    out = module.compute_loss(fixed)
    assert float(out.metrics["kl"]) == pytest.approx(0.0, abs=1e-6)
    assert float(out.metrics["clip_fraction"]) == 0.0


def test_random_downsampling_keeps_d3s_counts_and_d3s_keeps_the_max_variance() -> None:
    ds = {"n_init": 0.25, "n_final": 0.25, "k_init": 0.5, "k_final": 0.5}
    stats = {}
    for mode in ("d3s", "random"):
        module = FixedRolloutGRPO(tiny_module().backbone, tokenizer=TOK, reward=share_of_a, num_generations=4,
                                  max_new_tokens=8, optimizer=torch.optim.SGD, downsample={"mode": mode, **ds})
        fixed, stats[mode] = module.make_generation_batch(prompt_batch(TOK, ["ab", "c", "dd", "e"]))
        assert stats[mode]["selected_rollouts"] == kept_count(0.25, 16)
        # only rows that kept a token are forwarded again
        assert fixed["input_ids"].shape[0] == stats[mode]["kept_rollouts"] <= kept_count(0.25, 16)
        assert stats[mode]["kept_tokens"] == kept_count(0.5, int(stats[mode]["selected_tokens"]))
    assert stats["d3s"]["kept_tokens"] == stats["random"]["kept_tokens"]
    assert stats["d3s"]["var_a_after"] >= stats["random"]["var_a_after"]
    assert stats["d3s"]["var_a_after"] > stats["d3s"]["var_a_before"]


def test_a_failing_reward_never_stops_the_step() -> None:
    def sometimes(prompts: list[str], completions: list[str], **m: object) -> list[float]:
        if any("e" in c for c in completions):
            raise ValueError("cannot score e")
        return [math.nan if "l" in c else float(len(c)) for c in completions]

    batch = prompt_batch(TOK, ["ab", "c"])
    module = FixedRolloutGRPO(tiny_module().backbone, tokenizer=TOK, reward=sometimes, num_generations=4,
                              max_new_tokens=8, optimizer=torch.optim.SGD)
    _, stats = module.make_generation_batch(batch)
    assert stats["reward_errors"] == 8  # a bare callable that raises on the batch: every rollout scored 0
    # a RewardSet isolates the failing rollouts; with on_error=drop they leave the loss
    module.reward_fn = RewardSet({"sometimes": sometimes}, on_error="drop")
    rollouts, texts, _ = module._generate(batch, 4, greedy=False, max_new_tokens=8)
    failing = sum(("e" in t) or ("l" in t) for t in texts)
    fixed, stats = module.make_generation_batch(batch)
    assert stats["reward_errors"] == failing and 0 < failing < 8
    assert stats["kept_rollouts"] == 8 - failing and torch.isfinite(fixed["advantages"]).all()


def test_bad_settings_are_one_clear_error() -> None:
    with pytest.raises(ValueError, match="needs a reward"):
        tiny_module(reward=None)
    with pytest.raises(ValueError, match="num_generations"):
        tiny_module(num_generations=1)
    with pytest.raises(ValueError, match="downsample.mode"):
        tiny_module(downsample={"mode": "d4s"})
    with pytest.raises(ValueError, match="kept fraction"):
        tiny_module(downsample={"mode": "d3s", "n_init": 0.0})


@pytest.mark.parametrize("settings", [{}, {"beta": 0.05, "ppo_epochs": 2}],
                         ids=["plain", "experiment-defaults"])  # grpo/arith's beta and PPO epochs (docs/grpo.md)
def test_grpo_learns_a_trivial_reward(settings: dict) -> None:
    """The share of 'a' in 8-token completions rises from chance (1/14) within 25 generation batches; also with
    the k3 KL term and two PPO epochs per batch (clipping acting), the settings experiment=grpo/arith uses."""
    torch.manual_seed(0)
    module = tiny_module(num_generations=8, max_new_tokens=8, temperature=1.0, seed=1,
                         optimizer=functools.partial(torch.optim.AdamW, lr=1e-2), **settings)
    batches = [prompt_batch(TOK, ["ab", "cde", "f", "gh"])] * 1000
    loader = DataLoader(batches, batch_size=None, collate_fn=lambda b: b)
    rewards: list[float] = []

    class Record(pl.Callback):
        def on_train_batch_end(self, trainer: pl.Trainer, *args: object) -> None:
            rewards.append(float(trainer.callback_metrics["train/reward_mean"]))

    trainer = pl.Trainer(max_steps=25, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=[Record()],
                         gradient_clip_val=1.0)
    trainer.fit(module, loader)
    start, end = sum(rewards[:3]) / 3, sum(rewards[-3:]) / 3
    assert start < 0.2 and end > start + 0.3, rewards
    assert module.max_grad_norm == 1.0  # the trainer's clipping was taken over, not refused


@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dr_grpo", "dapo"])
def test_an_empty_padding_row_changes_no_normaliser(loss_type: str) -> None:
    """DDP pads a rank's micro-batches with empty-mask rows: they add nothing to numerator or denominator."""
    module = FixedRolloutGRPO(tiny_module().backbone, tokenizer=TOK, reward=share_of_a, num_generations=4,
                              max_new_tokens=8, optimizer=torch.optim.SGD, loss_type=loss_type)
    fixed, _ = module.make_generation_batch(prompt_batch(TOK, ["ab", "c"]))
    out = module.compute_loss(fixed)
    padded = {k: torch.cat([v, v[:1]]) for k, v in fixed.items()}
    padded["loss_mask"][-1] = False
    out_padded = module.compute_loss(padded)
    assert float(out_padded.denominator) == float(out.denominator) > 0
    torch.testing.assert_close(out_padded.numerator.detach(), out.numerator.detach())
