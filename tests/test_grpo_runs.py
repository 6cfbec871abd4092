"""method=grpo through `python train.py`: 2 DDP processes equal one, and resume equals an uninterrupted run.

Both launch train.py 2-3 times (15-30 s each on 2 cores): `slow` (`make test-slow`).
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from tests.distributed import final_weights, train_subprocess

GRPO = ["data=arith_prompts", "method=grpo", "reward=arith", "model.d_model=32", "model.n_layers=1",
        "model.n_heads=2", "method.num_generations=4", "method.max_new_tokens=8", "trainer.accelerator=cpu",
        "callbacks.progress_bar=null", "callbacks.run_artifacts.sample_max_new_tokens=0", "debug=smoke",
        "trainer.limit_val_batches=1", "method.optimizer.lr=1e-2"]
FIXED = ["method._target_=tests.models.grpo_helpers.FixedRolloutGRPO",
         "+reward.functions.length._target_=tests.models.grpo_helpers.LengthReward"]


def logged(run: Path, key: str) -> dict[int, float]:
    with (run / "csv" / "metrics.csv").open() as f:
        return {int(r["step"]): float(r[key]) for r in csv.DictReader(f) if r.get(key)}


@pytest.mark.slow
@pytest.mark.parametrize("loss_type", ["dapo", "grpo"])
def test_fixed_rollout_grpo_on_two_processes_equals_one(loss_type: str, tmp_path: Path) -> None:
    """The same 4 prompts per step as 1 process x 4 or 2 DDP processes x 2, two PPO epochs, micro-batches of 3
    rows: the normaliser's counts are summed over micro-batches and ranks before the backward, so the updates,
    and the weights after 4 steps, are the same."""
    common = [*GRPO, *FIXED, f"method.loss_type={loss_type}", "method.ppo_epochs=2", "method.micro_batch_size=3"]
    one = train_subprocess(tmp_path / "one", [*common, "data.batch_size=4"])
    two = train_subprocess(tmp_path / "two", [*common, "data.batch_size=2", "strategy=ddp", "trainer.devices=2"])
    for key in ("train/loss", "train/reward_mean"):
        a, b = logged(one, key), logged(two, key)
        assert len(a) == 2 and set(a) == set(b)  # 4 updates = 2 generation batches x 2 epochs
        torch.testing.assert_close(torch.tensor(list(a.values())), torch.tensor(list(b.values())), atol=1e-5,
                                   rtol=1e-4)
    w1, w2 = final_weights(one), final_weights(two)
    for name in w1:
        if name.startswith("backbone."):
            torch.testing.assert_close(w1[name], w2[name], atol=1e-5, rtol=1e-4, msg=name)


@pytest.mark.slow
def test_resume_between_generation_batches_gives_the_same_reward_curve(tmp_path: Path) -> None:
    """Stop after 3 of 6 generation batches, resume with ckpt_path=last: the sampled rollouts (the generator's
    state travels in the checkpoint), rewards and losses of batches 4-6 are the uninterrupted run's."""
    args = [*GRPO, "downsample=d3s", "trainer.max_steps=6", "data.batch_size=4", "method.temperature=1.5"]
    straight = train_subprocess(tmp_path / "straight", args)
    run = tmp_path / "resumed"
    train_subprocess(run, [*args, "+callbacks.stop._target_=tests.distributed.StopAtStep", "+callbacks.stop.step=3"])
    train_subprocess(run, [*args, "ckpt_path=last"])
    for key in ("train/reward_mean", "train/completion_tokens_mean", "train/loss", "train/backprop_tokens"):
        a, b = logged(straight, key), logged(run, key)  # {logged step: value}; 0-based generation batches
        assert sorted(a) == list(range(6)) and {3, 4, 5} <= set(b), (key, sorted(b))
        torch.testing.assert_close(torch.tensor([b[s] for s in (3, 4, 5)]), torch.tensor([a[s] for s in (3, 4, 5)]),
                                   atol=1e-5, rtol=1e-5, msg=key)


# D³S on 2 processes, micro-batches of 1 row (D³S keeps 2-8 rows a rank: several backwards per update), 2 PPO epochs
D3S_TWO_RANKS = [*GRPO, *FIXED, "downsample=d3s", "method.loss_type=grpo", "data.batch_size=2", "trainer.devices=2",
                 "trainer.max_steps=4", "method.micro_batch_size=1", "method.ppo_epochs=2"]


@pytest.fixture(scope="module")
def d3s_ddp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_subprocess(tmp_path_factory.mktemp("d3s_ddp"), [*D3S_TWO_RANKS, "strategy=ddp"])


@pytest.mark.slow
@pytest.mark.parametrize("strategy", [["strategy=deepspeed_zero2"],
                                      ["strategy=deepspeed_zero3",
                                       "strategy.zero_config.stage3_param_persistence_threshold=0"]],
                         ids=["zero2", "zero3"])
def test_d3s_grpo_under_deepspeed_selects_and_updates_as_under_ddp(strategy: list[str], d3s_ddp: Path,
                                                                    tmp_path: Path) -> None:
    """downsample=d3s on 2 processes: each rank picks from its own B·G pool (docs/grpo.md). Under DeepSpeed the
    picks, the tokens back-propagated and the updates must be DDP's: same logged selection counts and losses, same
    weights after 4 updates. GRPO normalises by the generation batch's token count over all ranks before the
    backward, which DeepSpeed's rank average keeps. Two DeepSpeed bugs this caught (both ~1e-2 off before the
    fixes): ZeRO runs did not clip gradients at all (trainer.gradient_clip_val=1 is on here), and with several
    micro-batches per update only the last one's gradients reached the step."""
    zero = train_subprocess(tmp_path / "zero", [*D3S_TWO_RANKS, *strategy])
    for key in ("train/selected_rollouts", "train/backprop_tokens", "train/loss"):
        a, b = logged(d3s_ddp, key), logged(zero, key)
        assert len(a) == 2 and set(a) == set(b), (key, a, b)  # 4 updates = 2 generation batches x 2 epochs
        torch.testing.assert_close(torch.tensor(list(b.values())), torch.tensor(list(a.values())), atol=1e-5,
                                   rtol=1e-4, msg=key)
    selected, pool = logged(d3s_ddp, "train/selected_rollouts"), logged(d3s_ddp, "train/rollouts")  # both ranks
    assert all(selected[s] < pool[s] for s in pool)  # D³S dropped rollouts on every step: not a no-op
    assert max(abs(v) for v in logged(d3s_ddp, "train/loss").values()) > 1e-2  # the kept ones moved the policy
    w1, w2 = final_weights(d3s_ddp), final_weights(zero)
    for name in w1:
        if name.startswith("backbone."):
            torch.testing.assert_close(w2[name], w1[name], atol=1e-5, rtol=1e-4, msg=name)


@pytest.mark.slow
def test_grpo_arith_smoke_run_and_the_step_probe_on_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`experiment=grpo/arith debug=smoke` runs both stages; scripts/grpo_step_probe.py reads its stage-1 policy
    (a smoke base solves nothing: a zero gradient is one error line, exit 1; a bad run dir, exit 2). The table
    itself is in docs/results.md, from a real base."""
    import importlib.util

    run = train_subprocess(tmp_path / "run", ["experiment=grpo/arith", "debug=smoke", "callbacks.progress_bar=null",
                                              "callbacks.run_artifacts.sample_max_new_tokens=0",
                                              "finetune.trainer.max_steps=8", "finetune.trainer.val_check_interval=2"])
    assert (run / "finetune" / "metrics.json").is_file()
    # 2 PPO epochs: 8 updates = 4 generation batches, validated after batches 2 and 4. The held-out accuracy is on
    # the objective's x-axis (the logger step of val/reward and train/*), not at the update count (twice it)
    acc, val = logged(run / "finetune", "arith/acc"), logged(run / "finetune", "val/reward")
    assert sorted(val) == [1, 3] and set(val) <= set(acc) and max(acc) <= 4, (sorted(acc), sorted(val))
    spec = importlib.util.spec_from_file_location("probe", Path(__file__).parents[1] / "scripts/grpo_step_probe.py")
    probe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(probe)
    # a 4-step base solves nothing: every advantage is 0, and the probe says so instead of dividing by 0
    assert probe.main([str(run), "--prompts", "4", "--batches", "1", "--eval-batches", "1", "--steps", "0.01"]) == 1
    assert "the GRPO gradient is zero" in capsys.readouterr().err
    assert probe.main([str(tmp_path)]) == 2 and "not a finished run dir" in capsys.readouterr().err


@pytest.mark.slow
def test_rloo_with_d3s_and_skillit_trains_from_one_command(tmp_path: Path) -> None:
    """`method=rloo` on the rollout loop composes with a down-sampler and a skill curriculum: one command trains
    it, D³S keeps a quarter of the rollouts at the start, and the curriculum's callback logs the sampled reward
    per skill from the RolloutRewards each step returns."""
    run = train_subprocess(tmp_path / "run", [*GRPO, "method=rloo", "method.optimizer.lr=1e-2", "downsample=d3s",
                                              "curriculum=skillit", "curriculum.callback.eval_every=2",
                                              "data.batch_size=4"])
    kept, total = logged(run, "train/selected_rollouts"), logged(run, "train/rollouts")
    assert kept[min(kept)] == round(0.25 * total[min(total)]) == 4
    assert any(logged(run, f"train/reward_skill{s}") for s in range(3))
