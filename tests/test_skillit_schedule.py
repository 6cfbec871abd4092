"""The reference code's schedule is the default of every Skill-It experiment: ~120 evaluations per run, so round 2's
window never holds the untrained step-0 losses, and pools large enough that no round cycles through a skill.

The H200 LEGO run (docs/results.md) evaluated twice per round: round 2's window still held step 0 and put 99.5 % of
the mixture on one skill, which then trained ~9 passes over its 1.8k questions in one round."""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace

import pytest
from omegaconf import OmegaConf

from src.callbacks.skills.skillit import SkillItCallback
from tests.helpers import EXPERIMENTS, compose_cfg

SKILLIT = [e for e in EXPERIMENTS if e.startswith("skillit/")]


def test_window_rule_by_hand() -> None:
    cb = SkillItCallback(rounds=6, window=3, eval_every=250)
    assert cb.window_holds_start(3000)  # evaluations at 0, 250, 500: round 2 (step 500) sees step 0
    assert not cb.window_holds_start(6000)  # 0, 250, ..., 1000: five
    assert not SkillItCallback(rounds=6, window=3, eval_every=50).window_holds_start(3000)
    assert not SkillItCallback(rounds=6, window=3, eval_every=250, eval_at_start=False).window_holds_start(3000)


@pytest.mark.parametrize("experiment", SKILLIT)
def test_skillit_experiments_follow_the_reference_schedule(experiment: str, run_dir: Path) -> None:
    cfg = compose_cfg([f"experiment={experiment}", "curriculum=skillit"], run_dir)
    OmegaConf.resolve(cfg)
    steps, every = cfg.trainer.max_steps, cfg.trainer.val_check_interval
    assert every == steps // 120 and cfg.curriculum.callback.eval_every == every
    c = cfg.curriculum.callback
    cb = SkillItCallback(eta=c.eta, rounds=c.rounds, window=c.window, eval_every=every)
    assert not cb.window_holds_start(steps), f"{experiment}: round 2's window holds the step-0 evaluation"
    props = list(cfg.data.pool or [1] * len(cfg.data.skills_graph))
    smallest = cfg.data.n_train * min(props) / sum(props)
    assert smallest >= steps // c.rounds * cfg.data.batch_size, f"{experiment}: a round can cycle a skill's pool"


def test_a_pool_smaller_than_a_round_warns_with_the_n_train_that_fixes_it(caplog: pytest.LogCaptureFixture
                                                                           ) -> None:
    cb = SkillItCallback(rounds=6, window=3, eval_every=10)
    trainer = SimpleNamespace(world_size=1, accumulate_grad_batches=1)
    dm = SimpleNamespace(pool_sizes=[100, 1000], batch_size=4, skill_names=["a", "b"])
    with caplog.at_level(logging.WARNING):
        cb._check_pool(trainer, dm, round_len=100)  # a round draws 400 > 100 examples of skill a
    assert "pools of a hold fewer (100)" in caplog.text and "4.0 times" in caplog.text
    assert "data.n_train to >= 4400" in caplog.text
    caplog.clear()
    cb._check_pool(trainer, SimpleNamespace(pool_sizes=[400, 400], batch_size=4, skill_names=["a", "b"]), 100)
    assert not caplog.text


def test_curve_area_is_the_time_average_of_the_docstring_example() -> None:
    from src.callbacks.skills.evaluation import curve_area

    assert curve_area([0, 50, 150], [0.0, 0.5, 1.0]) == pytest.approx(87.5 / 150)
    assert curve_area([100], [0.3]) == 0.3
    # the same final accuracy reached earlier has a larger area: what "learns faster" means
    assert curve_area([0, 50, 100], [0.0, 1.0, 1.0]) > curve_area([0, 50, 100], [0.0, 0.0, 1.0])


def test_unique_pool_has_distinct_questions_and_none_from_validation() -> None:
    from src.data.errors import DataError
    from src.data.skill_datamodule import SkillDataModule

    kw = dict(task={"kind": "addition", "n_digits": 2}, n_train=600, n_val_per_skill=40, seed=3)
    plain = SkillDataModule(**kw)
    train, val = plain.records()
    prompts = [r["prompt"] for r in train]
    held = {r["prompt"] for r in val}
    # 2-digit addition has 8100 questions per skill: 300 drawn at random repeat some, and meet validation
    assert len(set(prompts)) < len(prompts) or set(prompts) & held
    train, val = SkillDataModule(**kw, unique=True).records()
    prompts = [r["prompt"] for r in train]
    assert len(set(prompts)) == len(prompts) == 600 and not set(prompts) & {r["prompt"] for r in val}
    assert [sum(r["skill"] == i for r in train) for i in range(2)] == [300, 300]
    assert [r["skill"] for r in train] == sorted(r["skill"] for r in train)  # grouped by skill, as the sampler needs
    with pytest.raises(DataError, match="too few distinct questions"):
        SkillDataModule(task={"kind": "addition", "n_digits": 1}, n_train=400, n_val_per_skill=5, unique=True
                        ).records()
