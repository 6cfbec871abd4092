"""The options beyond the defaults, each checked by hand where a planted bug hid before (issue: mutation testing):
asymmetric clip bounds, batch-scaled advantages with dropped rollouts, the dr_grpo normaliser inside the module, a
D³S schedule whose start and end differ, IPO inside DPOModule, and validation rewards pooled over batches."""

from __future__ import annotations

import functools
import math
from types import SimpleNamespace

import pytest
import torch

from src.losses.d3s import kept_count
from src.losses.grpo import group_advantages
from src.models.downsamplers import D3S
from src.models.dpo import DPOModule, stack_views
from src.models.logprobs import batch_logprobs
from tests.models.components.conftest import tiny_compact
from tests.models.grpo_helpers import CharTokenizer, FixedRolloutGRPO, LengthReward, prompt_batch, tiny_module
from tests.models.test_dpo_module import pairs

TOK = CharTokenizer()


def fixed_grpo(**kwargs: object) -> FixedRolloutGRPO:
    return FixedRolloutGRPO(tiny_module().backbone, tokenizer=TOK, reward=LengthReward(), num_generations=4,
                            max_new_tokens=8, optimizer=functools.partial(torch.optim.SGD, lr=0.0), **kwargs)


def test_asymmetric_clip_bounds_clip_each_side_at_its_own_bound() -> None:
    """eps_low 0.1, eps_high 0.3. Ratios set per row: 1.25 with A > 0 stays inside 1 + eps_high (a mutant using
    eps_low there would clip it at 1.1); 0.85 with A < 0 is clipped at 1 − eps_low = 0.9 (eps_high would not)."""
    module = fixed_grpo(eps_low=0.1, eps_high=0.3, loss_type="grpo")
    fixed, _ = module.make_generation_batch(prompt_batch(TOK, ["ab", "c"]))
    a = fixed["advantages"]
    assert bool((a > 0).any()) and bool((a < 0).any())
    with torch.no_grad():
        logp = batch_logprobs(module.backbone, fixed, temperature=1.0).logp  # [n, T]
    ratio = torch.where(a > 0, torch.tensor(1.25), torch.where(a < 0, torch.tensor(0.85), torch.tensor(1.0)))  # [n]
    fixed["old_logp"] = logp - ratio.log()[:, None]  # exp(logp − old) = ratio on every token
    out = module.compute_loss(fixed)
    per_token = -torch.minimum(ratio * a, ratio.clamp(0.9, 1.3) * a)  # [n]: the same on every token of a row
    want = per_token.sum() / (a.numel())  # grpo: the mean over sequences of each sequence's token mean
    assert float(out.numerator.detach()) / float(out.denominator) == pytest.approx(float(want), abs=1e-5)
    mask = fixed["loss_mask"]
    clipped = (mask & (a < 0)[:, None]).sum() / mask.sum()  # only the A < 0 rows leave the clip range
    assert float(out.metrics["clip_fraction"]) == pytest.approx(float(clipped), abs=1e-6)


def test_batch_scaled_advantages_leave_dropped_rollouts_out_of_the_scale() -> None:
    """scale_rewards=batch: A = (r − mean_group) / std(valid rewards of the whole batch), by hand."""
    r = torch.tensor([1.0, float("nan"), 0, 0, 2, 2, float("nan"), 3])
    valid = torch.tensor([1, 0, 1, 1, 1, 1, 0, 1]).bool()
    kept = [1.0, 0.0, 0.0, 2.0, 2.0, 3.0]
    mean = sum(kept) / 6
    std = math.sqrt(sum((x - mean) ** 2 for x in kept) / 5)
    g1, g2 = 1 / 3, 7 / 3  # the groups' means over their valid rollouts
    want = [(1 - g1), 0, (0 - g1), (0 - g1), (2 - g2), (2 - g2), 0, (3 - g2)]
    got = group_advantages(r, 4, "batch", valid=valid)
    torch.testing.assert_close(got, torch.tensor([w / (std + 1e-6) for w in want]))


def test_dr_grpo_divides_by_sequences_times_the_completion_cap_inside_the_module() -> None:
    """Ratio 1 at the first epoch: per-token loss −A_i; dr_grpo = Σ_i n_i·(−A_i) / (sequences · max_new_tokens)."""
    module = fixed_grpo(loss_type="dr_grpo")
    fixed, _ = module.make_generation_batch(prompt_batch(TOK, ["ab", "c"]))
    out = module.compute_loss(fixed)
    n = fixed["loss_mask"].sum(-1).double()
    want = -(n * fixed["advantages"].double()).sum() / (len(n) * 8)
    assert float(out.denominator) == len(n)
    assert float(out.numerator.detach()) / float(out.denominator) == pytest.approx(float(want), abs=1e-6)


def test_a_d3s_schedule_moves_with_the_trainers_progress() -> None:
    """At update 5 of 10 a D³S schedule 0.25 -> 0.75 (rollouts) and 0.2 -> 0.6 (tokens) keeps 0.5 and 0.4."""
    module = fixed_grpo(downsample=D3S(n_init=0.25, n_final=0.75, k_init=0.2, k_final=0.6))
    module._trainer = SimpleNamespace(max_steps=10, global_step=5, global_rank=0)  # progress p = 0.5
    _, stats = module.make_generation_batch(prompt_batch(TOK, ["ab", "c", "dd", "e"]))
    assert stats["progress"] == 0.5
    assert stats["n_frac"] == pytest.approx(0.5) and stats["k_frac"] == pytest.approx(0.4)
    assert stats["selected_rollouts"] == kept_count(0.5, 16)
    assert stats["kept_tokens"] == kept_count(0.4, int(stats["selected_tokens"]))


def test_ipo_inside_the_module_uses_length_averaged_log_ratios() -> None:
    """IPO per pair: (h − 1/(2β))², h = mean log-ratio over the chosen response − the same over the rejected."""
    module = DPOModule(tiny_compact(), optimizer=torch.optim.AdamW, beta=0.5, loss_type="ipo")
    torch.nn.init.normal_(module.backbone.embed.weight)  # policy != reference
    batch = pairs()
    out = module.compute_loss(batch)
    both = stack_views(batch)
    with torch.no_grad():
        pol = batch_logprobs(module.backbone, both)
        ref = module.reference.logprobs(both)
    m = pol.mask.float()
    avg = ((pol.logp - ref) * m).sum(-1) / m.sum(-1)  # [2B]
    want = ((avg[:4] - avg[4:] - 1.0) ** 2).sum()  # 1/(2β) = 1
    torch.testing.assert_close(out.numerator.detach(), want, atol=1e-5, rtol=1e-5)


def test_validation_reward_is_pooled_over_prompts_not_averaged_over_batches() -> None:
    """Two validation batches of 3 and 1 prompts: val/reward is the mean over the 4 prompts."""
    module = fixed_grpo()
    logged: dict[str, float] = {}
    module.log = lambda name, value, **kw: logged.__setitem__(name, float(value))  # type: ignore[method-assign]
    rewards = []
    for batch in (prompt_batch(TOK, ["ab", "cde", "f"]), prompt_batch(TOK, ["ghij"])):
        module.validation_step(batch, 0)
        rewards += module.greedy_rewards(batch)[0].tolist()
    module.on_validation_epoch_end()
    assert sum(rewards[:3]) / 3 != pytest.approx(rewards[3])  # else a mean of batch means would agree
    assert logged["val/reward"] == pytest.approx(sum(rewards) / 4)


def test_validation_decodes_at_most_val_max_new_tokens() -> None:
    """val_max_new_tokens=2: greedy validation completions stop at 2 tokens while rollouts may take 8 (the char
    tokenizer: one token per character, so LengthReward sees at most 2 characters, i.e. 0.2)."""
    module = tiny_module(TOK, reward=LengthReward(), num_generations=2, max_new_tokens=8, val_max_new_tokens=2)
    batch = prompt_batch(TOK, ["ab", "cde", "f"])
    rewards, _ = module.greedy_rewards(batch)
    assert float(rewards.max()) <= 0.2 + 1e-6
    module.val_max_new_tokens = 8
    assert float(module.greedy_rewards(batch)[0].max()) > 0.2  # uncapped, some greedy completion is longer
