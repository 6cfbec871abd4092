"""cDPO's data selection (src/recipes/cdpo_select.py) on hand-made graded samples."""

from __future__ import annotations

import pytest

from src.recipes.cdpo_select import select_contrastive_data


def comp(text: str, answer: int | None, correct: bool) -> dict:
    return {"text": text, "answer": answer, "correct": correct, "first_wrong_step": None if correct else 0}


def test_sets_and_pairs_follow_the_spec() -> None:
    # 10 samples: 3 right (two identical), wrong answers 7 (x3), 8 (x2), 9 (x1), none (x1)
    comps = [comp("r1", 5, True), comp("r1", 5, True), comp("r2", 5, True),
             comp("a1", 7, False), comp("a2", 7, False), comp("a3", 7, False),
             comp("b1", 8, False), comp("b2", 8, False), comp("c1", 9, False), comp("n1", None, False)]
    sel = select_contrastive_data([{"prompt": "2+3=", "completions": comps}], negative_coverage=0.5)
    assert sorted(x["response"] for x in sel.positive) == ["r1", "r2"]  # distinct correct responses
    # 7 wrong; the largest clusters until >= 3.5 are covered: 7 (3 of 7), then 8 (5 of 7): one response of each
    assert [x["response"][0] for x in sel.negative] == ["a", "b"]
    (pair,) = sel.pairs
    assert pair["chosen"] in ("r1", "r2") and pair["rejected"].startswith("a")  # most frequent wrong answer
    assert pair["prompt"] == "2+3=" and pair["rejected_first_wrong_step"] == 0


def test_questions_without_both_kinds_give_no_pair() -> None:
    rows = [{"prompt": "q1", "completions": [comp("r", 1, True)] * 3},
            {"prompt": "q2", "completions": [comp("w", 2, False)] * 3}]
    sel = select_contrastive_data(rows)
    assert sel.stats() == {"positive": 1, "negative": 1, "pairs": 0}


def test_pairs_per_question_takes_distinct_pairs() -> None:
    comps = [comp(f"r{i}", 1, True) for i in range(3)] + [comp(f"w{i}", 2, False) for i in range(2)]
    sel = select_contrastive_data([{"prompt": "q", "completions": comps}], pairs_per_question=5)
    assert len(sel.pairs) == 2  # bounded by the distinct rejected responses
    assert len({p["rejected"] for p in sel.pairs}) == 2


@pytest.mark.parametrize(("coverage", "pairs"), [(0.0, 1), (1.5, 1), (0.5, 0)])
def test_bad_settings_are_rejected(coverage: float, pairs: int) -> None:
    with pytest.raises(ValueError, match="negative_coverage|pairs_per_question"):
        select_contrastive_data([], negative_coverage=coverage, pairs_per_question=pairs)
