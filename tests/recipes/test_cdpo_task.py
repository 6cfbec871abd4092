"""The cDPO recipe's task over your own `{prompt, answer}` records: graded by the reward set, solutions grouped by
the answer the reward reads, the held-out split, and one clear error per bad setting."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from src.callbacks.task_eval import RewardEval
from src.data.errors import DataError
from src.recipes.cdpo_task import PromptTask, TaskGrade, build_task
from src.rewards.combine import RewardSet
from src.rewards.math_answer import BoxedAnswerReward, GSM8KReward
from src.runtime.errors import ConfigError


def _cfg(tmp_path: Path, records: list[dict], reward: str = "GSM8KReward", **task) -> OmegaConf:
    src = tmp_path / "questions.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in records))
    return OmegaConf.create({
        "paths": {"cache_dir": str(tmp_path / "cache")},
        "reward": {"_target_": "src.rewards.combine.RewardSet",
                   "functions": {"correct": {"_target_": f"src.rewards.math_answer.{reward}"}}},
        "recipe": {"sample": {"max_new_tokens": 16},
                   "task": {"kind": "prompt", "source": {"kind": "file", "path": str(src)}, "n_eval": 1, **task}}})


QS = [{"prompt": "What is 600+600?", "answer": "1200"}, {"prompt": "Half of 3?", "answer": "1.5"},
      {"prompt": "held out", "answer": "7"}]


def test_solutions_are_graded_by_the_reward_and_grouped_by_the_answer_it_reads(tmp_path: Path) -> None:
    task = build_task(_cfg(tmp_path, QS), tmp_path / "run")
    assert isinstance(task, PromptTask) and task.acc_metric == "task/acc" and not task.has_steps
    assert [q["prompt"] for q in task.questions()] == ["What is 600+600?", "Half of 3?"]  # the last is held out
    held_out = (tmp_path / "run/task/eval.jsonl").read_text().splitlines()
    assert [json.loads(x)["prompt"] for x in held_out] == ["held out"]
    a, b = task.grade("What is 600+600?", "600+600 = 1,200 #### 1,200"), task.grade("What is 600+600?", "so 1200.0")
    assert a == TaskGrade("1200", True, True) and b.answer == a.answer and b.correct  # one answer, two spellings
    wrong = task.grade("Half of 3?", "it is 3/6")
    assert wrong == TaskGrade("1/2", False, True)
    assert task.grade("Half of 3?", "no idea") == TaskGrade(None, False, False)
    assert task.reference_solution(QS[1]) == "1.5"


def test_boxed_answers_and_a_reward_that_reads_no_answer(tmp_path: Path) -> None:
    task = build_task(_cfg(tmp_path, [{"prompt": "p", "answer": "\\frac{1}{2}"}, QS[2]], reward="BoxedAnswerReward"),
                      tmp_path / "run")
    assert task.grade("p", "= \\boxed{0.5}") == TaskGrade("1/2", True, True)
    assert task.grade("p", "= \\boxed{\\dfrac{1}{2}}").answer == "1/2"
    assert task.reference_solution({"prompt": "p", "answer": "\\frac{1}{2}"}) == "\\boxed{\\frac{1}{2}}"  # boxed
    plain = RewardSet({"ok": lambda prompts, completions, answer: [float(c == a) for c, a in zip(completions, answer)]})
    assert not plain.reads_answers and plain.final_answer("x") is None
    task.reward = plain  # without an answer reader solutions are grouped by their text
    assert task.grade("p", "  \\frac{1}{2} ") == TaskGrade("\\frac{1}{2}", False, True)


def test_final_answer_agrees_with_matches() -> None:
    g, b = GSM8KReward(), BoxedAnswerReward()
    for x, y in [("#### 1,234", "1234"), ("$-5.50", "-11/2"), ("72 apples", "#### 72")]:
        assert g.matches(x, y) and g.final_answer(x) == g.final_answer(y)
    assert not g.matches("#### 12", "13") and g.final_answer("#### 12") != g.final_answer("13")
    assert b.final_answer("\\boxed{\\left(x + 1\\right)}") == "(x+1)" and b.final_answer("x") is None


@pytest.mark.parametrize("records,task,error,words", [
    (QS[:1], {"n_eval": 1}, ConfigError, "leave questions to sample"),
    ([QS[0], {"prompt": QS[0]["prompt"], "answer": "5"}, QS[2]], {}, DataError, "two answers"),
    ([{"question": "q", "answer": "1"}] * 2, {}, DataError, "prompt"),
    (QS, {"kind": "nope"}, ConfigError, "recipe.task.kind='nope'"),
])
def test_bad_settings_are_one_clear_error(tmp_path: Path, records, task, error, words) -> None:
    with pytest.raises(error, match=words):
        build_task(_cfg(tmp_path, records, **task), tmp_path / "run")


def test_a_prompt_field_of_another_name(tmp_path: Path) -> None:
    recs = [{"question": "q1", "solution": "#### 4"}, {"question": "q2", "solution": "#### 5"}]
    task = build_task(_cfg(tmp_path, recs, prompt_field="question", answer_field="solution"), tmp_path / "run")
    assert task.questions()[0]["prompt"] == "q1" and task.grade("q1", "4").correct


def test_reward_eval_scores_greedy_completions_by_the_reward(tmp_path: Path) -> None:
    f = tmp_path / "eval.jsonl"
    f.write_text("".join(json.dumps({"prompt": p, "answer": a}) + "\n" for p, a in [("a", "1"), ("b", "2"),
                                                                                   ("c", "3"), ("d", "4")]))

    class Tok:  # one token per character; 0 is the end token
        eos_id = 0

        def encode(self, s: str) -> list[int]:
            return [ord(c) for c in s]

        def decode(self, ids: list[int]) -> str:
            return "".join(chr(i) for i in ids)

    replies = {"a": "#### 1", "b": "#### 3", "c": "3", "d": "?"}

    class Module:  # the objective's sampler, answering from the table above
        def sample_ids(self, prompts, max_new_tokens, temperature):
            return [[ord(c) for c in replies[chr(p[0])]] + [0] for p in prompts]

    ev = RewardEval(str(f), RewardSet({"correct": GSM8KReward()}), max_new_tokens=8)
    assert ev.evaluate(Module(), Tok()) == {"acc": 0.5, "reward": 0.5, "answered": 0.75}
    assert RewardEval(str(f), RewardSet({"correct": GSM8KReward()}), limit=1).prompts == ["a"]


def test_reward_eval_with_chat_asks_each_prompt_as_a_user_turn(tmp_path: Path) -> None:
    f = tmp_path / "eval.jsonl"
    f.write_text(json.dumps({"prompt": "a", "answer": "1"}) + "\n")

    class Hf:
        chat_template = "stub"

        def apply_chat_template(self, msgs, tokenize, add_generation_prompt):  # noqa: ANN001, ANN201
            assert not tokenize and add_generation_prompt
            return "".join(f"<{m['role']}>{m['content']}" for m in msgs) + "<assistant>"

    class Tok:
        eos_id, hf = 0, Hf()

        def encode(self, s: str) -> list[int]:
            return [ord(c) for c in s]

        def decode(self, ids: list[int]) -> str:
            return "".join(chr(i) for i in ids)

    seen: list[str] = []

    class Module:
        def sample_ids(self, prompts, max_new_tokens, temperature):  # noqa: ANN001, ANN201
            seen.extend("".join(chr(i) for i in p) for p in prompts)
            return [[ord(c) for c in "#### 1"] + [0] for _ in prompts]

    ev = RewardEval(str(f), RewardSet({"correct": GSM8KReward()}), chat=True)
    assert ev.evaluate(Module(), Tok())["acc"] == 1.0 and seen == ["<user>a<assistant>"]


def test_a_chat_task_turns_on_the_stage_evaluations_chat_and_renders_its_prompts() -> None:
    from src.recipes.cdpo_task import ArithTask

    task = ArithTask.__new__(ArithTask)  # no task files needed for these two methods
    task.chat = True
    assert task.stage_callbacks({"arith_eval": {"n_eval": 5}}) == {"arith_eval": {"chat": True}}
    assert task.stage_callbacks({"arith_eval": None}) == {}  # a stage without the evaluation stays without
    task.chat = False
    assert task.stage_callbacks({"arith_eval": {"n_eval": 5}}) == {} and task.prompt_text(None, "1+2=") == "1+2="
