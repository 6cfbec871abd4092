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


def test_chat_prompts_and_pairs_ask_the_prompts_questions(tmp_path):
    """prompts_chat asks the prompts file's questions as user turns; each preference pair chooses the correct
    solution and rejects a well-formed one with a single slip (its first wrong step is a real step, and its answer
    is wrong), so DPO on them prefers right arithmetic, not a format."""
    paths = ensure_arith_files(tmp_path, n_train=50, n_prompts=200, n_eval=20)
    rows = {k: [json.loads(line) for line in paths[k].read_text().splitlines()]
            for k in ("prompts", "prompts_chat", "preference_chat")}
    for plain, chat, pair in zip(rows["prompts"], rows["prompts_chat"], rows["preference_chat"]):
        user = [{"role": "user", "content": plain["prompt"]}]
        assert chat == {"prompt": user, "answer": plain["answer"], "skill": plain["skill"]}
        assert pair["prompt"] == user
        chosen, rejected = pair["chosen"][0]["content"], pair["rejected"][0]["content"]
        assert pair["chosen"][0]["role"] == pair["rejected"][0]["role"] == "assistant"
        assert grade(plain["prompt"], chosen).correct
        bad = grade(plain["prompt"], rejected)
        assert bad.well_formed and not bad.correct
        assert bad.first_wrong_step < plain["skill"] + 1  # a step slipped, not only the stated answer
    slips = [grade(r["prompt"][0]["content"], r["rejected"][0]["content"]).first_wrong_step
             for r in rows["preference_chat"] if r["prompt"][0]["content"].count("+") == 3]
    assert set(slips) == {0, 1, 2}  # the slip falls on every step of a 3-step solution


def test_a_wrong_solution_carries_its_slip_on_correctly():
    """Exactly one step adds wrongly, each step starts from the previous step's (possibly wrong) result, and the
    stated answer is the last result."""
    problem = Problem((12, 34, 5, 60))
    for seed in range(20):
        *steps, answer = problem.wrong_solution(random.Random(seed)).split()
        parsed = [tuple(int(x) for x in step.replace("=", "+").split("+")) for step in steps]  # (a, b, result)
        assert [b for _, b, _ in parsed] == [34, 5, 60]
        assert parsed[0][0] == 12 and all(parsed[i + 1][0] == parsed[i][2] for i in range(2))
        assert sum(a + b != r for a, b, r in parsed) == 1
        assert answer == f"#{parsed[-1][2]}" and parsed[-1][2] != problem.answer
