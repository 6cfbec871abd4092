"""Skill-It composed with GRPO (`curriculum=skillit method=grpo`): the per-skill reward sets the mixture, the mixture
decides which prompts GRPO trains on, resume keeps both; and the configs that compose it (grpo/arith)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import pytest

from src.callbacks.skills.evaluation import SkillEvalCallback
from src.callbacks.skills.skillit import SkillItCallback
from src.data.errors import DataError
from src.data.skill_mixture import item_skills
from src.data.skills_graph import skillit_mixture
from src.recipes.finetune import finetune_config
from src.runtime.build import build_components
from src.runtime.checkpoints import resolve_ckpt_path
from tests.helpers import compose_cfg

REWARD_OF_SKILL = {0: 1.0, 1: 0.5, 2: 0.0}  # skill 2 is never solved, skill 0 always


class SkillReward:
    """A controlled reward: a function of the prompt's skill alone (metadata `skill`), whatever the completion."""

    min_score, max_score = 0.0, 1.0  # read by reward_max: auto, so L_j = 1 - r_j

    def __call__(self, prompts: list[str], completions: list[str], skill: list[int], **metadata: Any) -> list[float]:
        return [REWARD_OF_SKILL[s] for s in skill]


def _prompt_file(root: Path) -> Path:
    """30 prompts of each of 3 skills (2, 3, 4 one-digit operands), as data.format=prompt reads them."""
    rng = np.random.default_rng(0)
    path = root / "prompts.jsonl"
    rows = []
    for skill in range(3):
        for _ in range(30):
            ops = rng.integers(0, 10, size=skill + 2).tolist()
            rows.append(json.dumps({"prompt": "+".join(map(str, ops)) + "=", "answer": sum(ops), "skill": skill}))
    path.write_text("\n".join(rows) + "\n")
    return path


def _overrides(data: Path) -> list[str]:
    return [
        "data=prompts_jsonl", f"data.source.path={data}", "data.seq_len=16", "data.tokenizer.vocab_size=280",
        "data.batch_size=4", "+data.val_batch_size=16", "data.val_fraction=0.25",
        "data.skills_graph=[[1,0,0],[0,1,0],[0,0,1]]", "method=grpo", "reward=arith", "curriculum=skillit",
        "method.num_generations=2", "method.max_new_tokens=3", "model=tiny", "model.d_model=32", "model.n_layers=1",
        "model.n_heads=2", "model.max_seq_len=32", "trainer.accelerator=cpu", "trainer.max_steps=6",
        "trainer.val_check_interval=2", "trainer.limit_val_batches=1", "trainer.enable_model_summary=false",
        "+skillit={eta: 2.0, rounds: 3, window: 1}", "callbacks.progress_bar=null",
        "callbacks.run_artifacts.sample_max_new_tokens=0",
    ]


class _Record(pl.Callback):
    """The skills of every prompt batch GRPO trained on."""

    def __init__(self) -> None:
        self.skills: list[list[int]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
        self.skills.append(batch["skill"].tolist())


class _StopAt(pl.Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, *args) -> None:  # noqa: ANN001, ANN002
        if trainer.global_step >= self.step:
            trainer.should_stop = True


def _fit(overrides: list[str], run_dir: Path, extra: list[pl.Callback], ckpt: str | None = None):  # noqa: ANN202
    cfg = compose_cfg(overrides, run_dir)
    pl.seed_everything(cfg.seed, workers=True)
    dm, module, trainer = build_components(cfg)
    module.reward_fn = SkillReward()
    trainer.callbacks.extend(extra)
    trainer.fit(module, datamodule=dm, ckpt_path=ckpt)
    return dm, next(c for c in trainer.callbacks if isinstance(c, SkillEvalCallback))


@pytest.fixture(scope="module")
def straight(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any, SkillItCallback, _Record]:
    root = tmp_path_factory.mktemp("skillit_grpo")
    data = _prompt_file(root)
    rec = _Record()
    dm, cb = _fit(_overrides(data), root / "straight", [rec])
    return data, dm, cb, rec


def test_low_reward_skill_gains_weight_and_the_trained_prompts_follow(straight) -> None:  # noqa: ANN001
    data, dm, cb, rec = straight
    assert isinstance(cb, SkillItCallback) and cb.signal_used == "reward"
    assert dm.skill_names == ["skill0", "skill1", "skill2"]
    # every evaluation: the per-skill greedy reward and L_j = 1 − r_j
    for e in cb.evals:
        np.testing.assert_allclose(e["reward"], [1.0, 0.5, 0.0])
        np.testing.assert_allclose(e["loss"], [0.0, 0.5, 1.0])
    assert [m["step"] for m in cb.mixtures] == [0, 2, 4]  # round 1 at fit start (identity graph: uniform)
    np.testing.assert_allclose(cb.mixtures[0]["weights"], [1 / 3] * 3)
    expect = skillit_mixture(np.eye(3), np.array([[0.0, 0.5, 1.0]]), 2.0)  # ∝ exp(2·L): [0.09, 0.24, 0.67]
    for m in cb.mixtures[1:]:
        np.testing.assert_allclose(m["weights"], expect, rtol=1e-9)
    assert np.argmax(expect) == 2 and expect[2] > 0.6  # the unsolved skill gets most prompts
    # the prompts GRPO trained on are exactly the sampler's draws under that schedule
    train_skills = item_skills(dm.train_dataset)[dm._view.train_order]  # [N], skill of each grouped position
    drawn = dm.sampler.global_indices(0, 6 * 4)
    assert rec.skills == [[int(train_skills[i]) for i in drawn[4 * s: 4 * s + 4]] for s in range(6)]
    # and the stream's skill frequencies follow the mixture in force
    pos = cb.mixtures[-1]["position"]
    freq = np.bincount(train_skills[dm.sampler.global_indices(pos, 4000)], minlength=3) / 4000
    np.testing.assert_allclose(freq, expect, atol=0.03)
    first = np.bincount(train_skills[dm.sampler.global_indices(0, cb.mixtures[1]["position"])], minlength=3)
    assert first[2] / first.sum() < 0.6  # before the first update: the uniform mixture


def test_resume_keeps_the_mixture_and_the_prompts(straight, tmp_path: Path) -> None:  # noqa: ANN001
    data, _, cb, rec = straight
    _fit(_overrides(data), tmp_path / "b", [_StopAt(4)])  # stops right at a round start
    ckpt = resolve_ckpt_path("last", tmp_path / "b", tmp_path / "logs")
    resumed_rec = _Record()
    dm, resumed = _fit(_overrides(data), tmp_path / "b", [resumed_rec], ckpt)
    assert dm.restored
    assert resumed.mixtures == cb.mixtures  # same rounds, weights and switch positions
    assert [e["step"] for e in resumed.evals] == [e["step"] for e in cb.evals]
    assert resumed_rec.skills == rec.skills[4:]


@pytest.mark.parametrize("experiment", ["grpo/arith", "d3s/arith"])
def test_grpo_arith_composes_with_skillit_on_its_grpo_stage(experiment: str, run_dir: Path) -> None:
    """`experiment=grpo/arith curriculum=skillit` (and D³S's): the SFT stage has no curriculum (its data has no
    skills), the GRPO stage gets Skill-It over the prompts' skills."""
    cfg = compose_cfg([f"experiment={experiment}", "curriculum=skillit", "debug=smoke"], run_dir)
    _, _, trainer = build_components(cfg)
    assert not any(isinstance(c, SkillEvalCallback) for c in trainer.callbacks)
    ft = finetune_config(cfg, run_dir)
    dm, module, trainer = build_components(ft)
    assert any(isinstance(c, SkillItCallback) for c in trainer.callbacks)
    dm.setup("fit")
    assert dm.samples_by_skill and dm.skill_names == ["skill0", "skill1", "skill2"]
    assert callable(module.greedy_rewards)


def test_plain_grpo_arith_keeps_the_plain_prompt_stream(run_dir: Path) -> None:
    ft = finetune_config(compose_cfg(["experiment=grpo/arith", "debug=smoke"], run_dir), run_dir)
    dm, _, trainer = build_components(ft)
    assert not dm.samples_by_skill and not any(isinstance(c, SkillEvalCallback) for c in trainer.callbacks)
    assert "schedule" not in dm.state_dict()


def test_curriculum_without_skills_or_with_the_loss_signal_is_one_clear_error(tmp_path: Path) -> None:
    data = tmp_path / "noskill.jsonl"
    data.write_text("\n".join(json.dumps({"prompt": f"{i}+1=", "answer": i + 1}) for i in range(40)) + "\n")
    over = [o for o in _overrides(data) if not o.startswith("data.source.path")]
    with pytest.raises(DataError, match="have no skill"):
        _fit([*over, f"data.source.path={data}"], tmp_path / "a", [])
    with pytest.raises(DataError, match="signal=loss .* use method=grpo with signal=reward"):
        _fit([*_overrides(_prompt_file(tmp_path)), "curriculum.callback.signal=loss"], tmp_path / "b", [])


def test_skill_curriculum_adds_skills_from_the_highest_reward(straight, tmp_path: Path) -> None:  # noqa: ANN001
    """The other mixture curricula read the same signal: round t trains on the ceil(t·k/T) lowest L = 1 − r,
    i.e. the best-rewarded skills first."""
    data = straight[0]
    over = [o for o in _overrides(data) if not o.startswith("+skillit")]
    _, cb = _fit([*over, "curriculum=skill_curriculum", "+skillit={rounds: 3}"], tmp_path / "run", [])
    assert cb.signal_used == "reward"
    assert [m["step"] for m in cb.mixtures] == [0, 0, 2, 4]  # fit start (uniform), then rounds 1-3
    np.testing.assert_allclose([m["weights"] for m in cb.mixtures[1:]],
                               [[1, 0, 0], [0.5, 0.5, 0], [1 / 3, 1 / 3, 1 / 3]])


@pytest.mark.parametrize(("overrides", "message"), [
    (["experiment=grpo/arith_skillit", "curriculum.callback.signal=loss"], "signal=loss is the answer-token loss"),
    (["experiment=grpo/arith", "curriculum=anticurriculum"], "orders examples by a reference model's answer loss"),
    (["experiment=rainbow/retrofit", "finetune.model.lora.token_init=eoz"], "'eoz' (fine-tuning stage): not a token"),
    (["experiment=grpo/arith", "+finetune.optimizer.lr=1"], "finetune has unknown keys ['optimizer']"),
])
def test_a_second_stage_mistake_is_refused_before_the_first_stage_trains(overrides: list[str], message: str,
                                                                        tmp_path: Path) -> None:
    """The callback or the model would refuse these only when stage 2 starts, after all of stage 1's training."""
    from src.recipes.finetune import preflight
    from src.runtime.errors import ConfigError

    cfg = compose_cfg([*overrides, "debug=smoke"], tmp_path / "run")
    with pytest.raises(ConfigError, match=re.escape(message)):
        preflight(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()
    preflight(compose_cfg(["experiment=grpo/arith_skillit", "debug=smoke"], tmp_path / "ok"), tmp_path / "ok")


def test_reward_max_auto_reads_the_rewards_range_and_names_the_fix_when_it_cannot() -> None:
    """auto: the reward set's best total (arith + 0.1 format = 1.1); a reward function without a declared range is
    one error naming curriculum.callback.reward_max; a number is taken as given, anything else refused."""
    from src.callbacks.skills.evaluation import _reward_max_setting, resolve_reward_max
    from src.rewards.arith import ArithAnswerReward
    from src.rewards.combine import RewardSet
    from src.rewards.format import FormatReward

    both = RewardSet({"correct": ArithAnswerReward(), "format": FormatReward()}, {"format": 0.1})
    assert resolve_reward_max("auto", both) == pytest.approx(1.1)
    plain = RewardSet({"mine": lambda prompts, completions, **m: [1.0] * len(completions)})
    with pytest.raises(DataError, match="curriculum.callback.reward_max="):
        resolve_reward_max("auto", plain)
    assert resolve_reward_max(_reward_max_setting("2.5"), plain) == 2.5
    with pytest.raises(DataError, match="neither a number nor auto"):
        _reward_max_setting("best")
