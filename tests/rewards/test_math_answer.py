"""GSM8K and boxed-answer rewards on the strings users' models write: separators, signs, fractions, units, and no
answer at all (which scores 0, never raises)."""

from __future__ import annotations

from fractions import Fraction

import pytest

from src.rewards.math_answer import BoxedAnswerReward, GSM8KReward, answers_match, boxed, gsm8k_final, parse_number


@pytest.mark.parametrize(("text", "value"), [
    ("1,234", Fraction(1234)), ("−5", Fraction(-5)), ("-5", Fraction(-5)), ("$1,000.50", Fraction(2001, 2)),
    ("3.50", Fraction(7, 2)), (".5", Fraction(1, 2)), ("3/4", Fraction(3, 4)), ("\\frac{3}{4}", Fraction(3, 4)),
    ("-\\frac{1}{2}", Fraction(-1, 2)), ("12 apples", Fraction(12)), ("50%", Fraction(50)), ("72.", Fraction(72)),
])
def test_numbers_as_answers_are_written(text: str, value: Fraction) -> None:
    assert parse_number(text) == value


@pytest.mark.parametrize("text", ["1,23", "abc", "", "1/0", None, "12 - 3"])
def test_what_is_not_one_number_is_none(text: str | None) -> None:
    assert parse_number(text) is None


def test_gsm8k_reads_the_last_hashes_else_the_last_number() -> None:
    assert gsm8k_final("She pays 3 + 4 = 7.\n#### 7") == "7"
    assert gsm8k_final("#### 5 wrong\n#### 1,200") == "1,200"
    assert parse_number(gsm8k_final("so the total is $-3.")) == -3
    assert gsm8k_final("no answer here") is None


def test_gsm8k_reward() -> None:
    reward = GSM8KReward()
    completions = ["He has 1,200 dollars.\n#### 1,200", "#### 1200.0", "#### 12", "I don't know", "#### -7",
                   "The answer is 1200 apples"]
    answers = ["1200", "Natalia sold 48/2 = 24 clips...\n#### 1200", "1200", "1200", "-7", "1200"]
    assert reward([""] * 6, completions, answer=answers) == [1.0, 1.0, 0.0, 0.0, 1.0, 1.0]
    with pytest.raises(ValueError, match="needs an `answer` column"):
        reward(["q"], ["#### 1"])


def test_boxed_takes_the_last_balanced_box() -> None:
    assert boxed("first \\boxed{1} then \\boxed{\\frac{3}{4}}") == "\\frac{3}{4}"
    assert boxed("\\fbox{a{b}c}") == "a{b}c"
    assert boxed("\\boxed{12") is None and boxed("no box") is None


@pytest.mark.parametrize(("a", "b", "same"), [
    ("\\dfrac{1}{2}", "0.5", True), ("\\frac12", "\\frac{1}{2}", True),
    ("\\sqrt{8}", "2\\sqrt{2}", True), ("x^2+2x+1", "(x+1)^2", True), ("(1,2)", "(1, 2)", True),
    ("\\left( 3, 4 \\right)", "(3,4)", True), ("-3", "−3", True), ("10\\%", "10", True),
    ("\\text{5 cm}", "5 cm", True), ("3", "4", False), ("\\pi", "3.14", False), ("x", "y", False),
])
def test_boxed_answers_match_when_equivalent(a: str, b: str, same: bool) -> None:
    assert answers_match(a, b) is same


def test_boxed_reward() -> None:
    reward = BoxedAnswerReward()
    completions = ["so $x = \\boxed{\\dfrac{1}{2}}$.", "\\boxed{2\\sqrt{2}}", "the answer is 1/2", "\\boxed{3}"]
    answers = ["0.5", "The root is \\boxed{\\sqrt{8}}", "\\frac{1}{2}", "4"]
    assert reward([""] * 4, completions, answer=answers) == [1.0, 1.0, 0.0, 0.0]  # no box: 0, not an error


@pytest.mark.parametrize(("name", "completion"), [("gsm8k", "so #### 1,005"), ("boxed", "\\boxed{1005}")])
def test_reward_configs_score_through_the_reward_set(name: str, completion: str, tmp_path) -> None:  # noqa: ANN001
    from hydra.utils import instantiate

    from tests.helpers import compose_cfg

    rs = instantiate(compose_cfg(["data=prompts_jsonl", "method=grpo", f"reward={name}"], tmp_path).reward)
    assert list(rs(["q", "q"], [completion, "no answer"], answer=["1005", "1005"]).total) == [1.0, 0.0]
