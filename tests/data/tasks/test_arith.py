"""The multi-step arithmetic task: solutions grade correct, each kind of mistake is located at its first wrong
step, and held-out questions never leak into a training file."""

from __future__ import annotations

import json
import random

import pytest

from src.data.tasks.arith import Problem, ensure_arith_files, final_answer, grade, parse_question, sample_problem


def test_reference_solutions_grade_correct_and_well_formed():
    rng = random.Random(0)
    for _ in range(200):
        p = sample_problem(rng)
        g = grade(p.question, p.solution())
        assert (g.correct, g.well_formed, g.first_wrong_step, g.answer) == (True, True, None, p.answer)
        assert len(g.step_spans) == len(p.operands)  # one per addition, then the #answer span
        assert parse_question(p.question) == p


@pytest.mark.parametrize(
    ("completion", "correct", "first_wrong"),
    [
        ("12+34=46 46+5=52 #52", False, 1),  # second step's sum wrong
        ("12+34=47 47+5=52 #52", False, 0),  # error in step 0 carried on
        ("12+34=46 #46", False, 1),  # a step is missing
        ("12+34=46 46+5=51 #50", False, 2),  # steps right, stated answer wrong
        ("12+34=46 46+5=51", False, 2),  # no answer
        ("12+35=47 47+5=52 #52", False, 0),  # copied an operand wrong
        ("x #51", True, 0),  # right answer by a malformed route: correct, but not well formed
    ],
)
def test_mistakes_are_located_at_the_first_wrong_step(completion, correct, first_wrong):
    g = grade("12+34+5=", completion)
    assert g.correct is correct
    assert g.first_wrong_step == first_wrong
    assert not g.well_formed or completion.count(" ") == 2


def test_step_spans_cover_the_written_steps():
    completion = "12+34=46 46+5=52 #52"
    g = grade(Problem((12, 34, 5)), completion)
    assert [completion[s:e] for s, e in g.step_spans] == ["12+34=46", "46+5=52", "#52"]


def test_final_answer_reads_the_integer_after_the_hash():
    assert final_answer("1+2=3 #3") == 3
    assert final_answer("1+2=3 #") is None
    assert final_answer("no answer") is None


def test_files_hold_no_evaluation_question(tmp_path):
    paths = ensure_arith_files(tmp_path, n_train=400, n_prompts=100, n_eval=50)
    rows = {k: [json.loads(line) for line in p.read_text().splitlines()] for k, p in paths.items()}
    held = {r["prompt"] for r in rows["eval"]}
    assert len(held) == 50
    assert not held & {r["prompt"] for r in rows["sft"]}
    assert not held & {r["prompt"] for r in rows["prompts"]}
    assert not {r["prompt"] for r in rows["sft"]} & {r["prompt"] for r in rows["prompts"]}
    for r in rows["sft"][:50]:
        assert grade(r["prompt"], r["response"]).correct
    for r in rows["prompts"][:50]:
        assert parse_question(r["prompt"]).answer == r["answer"]
        assert r["skill"] in (0, 1, 2)
    for r, chat in zip(rows["sft"], rows["sft_chat"]):  # the same solutions, as a user turn and the answer
        assert chat["messages"] == [{"role": "user", "content": r["prompt"]},
                                    {"role": "assistant", "content": r["response"]}]
    assert ensure_arith_files(tmp_path, n_train=400, n_prompts=100, n_eval=50) == paths  # cached
