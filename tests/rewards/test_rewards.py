"""Rewards: the arithmetic checker, the format reward, weighting, and failures isolated per rollout."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from hydra.utils import instantiate

from src.rewards.arith import ArithAnswerReward
from src.rewards.combine import RewardSet
from src.rewards.format import FormatReward
from tests.helpers import compose_cfg

PROMPTS = ["12+34+5="] * 4
COMPLETIONS = ["12+34=46 46+5=51 #51", "12+34=46 46+5=50 #50", "12+34=46 46+5=51", "#51 junk"]
ANSWERS = [51, 51, 51, "51"]


def test_arith_reward_checks_the_final_answer() -> None:
    assert ArithAnswerReward()(PROMPTS, COMPLETIONS, answer=ANSWERS) == [1.0, 0.0, 0.0, 1.0]


def test_format_reward() -> None:
    assert FormatReward()(PROMPTS, COMPLETIONS) == [1.0, 1.0, 0.0, 1.0]
    assert FormatReward(r"(\d+\+\d+=\d+ )*#\d+", full_match=True)(PROMPTS, COMPLETIONS) == [1.0, 1.0, 0.0, 0.0]


def test_weighted_sum() -> None:
    rs = RewardSet({"correct": ArithAnswerReward(), "format": FormatReward()}, {"correct": 1.0, "format": 0.1})
    out = rs(PROMPTS, COMPLETIONS, answer=ANSWERS)
    assert out.total == pytest.approx([1.1, 0.1, 0.0, 1.1])
    assert out.valid == [True] * 4 and out.n_errors == 0


def flaky(prompts: list[str], completions: list[str], **meta: list) -> list[float]:
    """Raises on any batch holding 'boom'; NaN for 'nan'; None for 'none'."""
    if any("boom" in c for c in completions):
        raise RuntimeError("boom")
    return [math.nan if c == "nan" else None if c == "none" else 1.0 for c in completions]


@pytest.mark.parametrize("on_error", ["zero", "drop"])
def test_a_failing_rollout_is_counted_and_scored_as_configured(on_error: str) -> None:
    rs = RewardSet({"flaky": flaky, "format": FormatReward("x")}, {"format": 0.5}, on_error=on_error)
    out = rs(["p"] * 5, ["ok x", "boom", "nan", "none", "ok"], )
    assert out.errors == {"flaky": 3, "format": 0}
    if on_error == "zero":
        assert out.total == [1.5, 0.0, 0.0, 0.0, 1.0] and all(out.valid)
    else:
        assert out.valid == [True, False, False, False, True] and out.total == [1.5, 0.0, 0.0, 0.0, 1.0]


def test_bad_reward_config_is_one_clear_error() -> None:
    with pytest.raises(ValueError, match="on_error"):
        RewardSet({"f": flaky}, on_error="ignore")
    with pytest.raises(ValueError, match="not in reward.functions"):
        RewardSet({"f": flaky}, {"g": 1.0})
    with pytest.raises(ValueError, match="not callable"):
        RewardSet({"f": 3})


@pytest.mark.parametrize("name", ["arith", "format", "arith_format"])
def test_reward_configs_instantiate(name: str, tmp_path: Path) -> None:
    cfg = compose_cfg([f"reward={name}"], tmp_path)
    rs = instantiate(cfg.reward)
    out = rs(PROMPTS, COMPLETIONS, answer=ANSWERS)
    assert len(out.total) == 4 and out.n_errors == 0


def test_max_total_is_the_best_weighted_score_when_every_function_declares_its_range() -> None:
    """{correct: 1, format: 0.1} -> 1.1; a negative weight takes that function's min (a penalty at best 0); one
    function without a declared range -> None (the caller must be told the maximum)."""
    assert RewardSet({"correct": ArithAnswerReward(), "format": FormatReward()}, {"format": 0.1}).max_total == \
        pytest.approx(1.1)
    assert RewardSet({"correct": ArithAnswerReward(), "format": FormatReward()}, {"format": -0.5}).max_total == 1.0
    assert RewardSet({"correct": ArithAnswerReward(), "mine": lambda p, c, **m: [0.0] * len(c)}).max_total is None
