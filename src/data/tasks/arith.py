"""Multi-step arithmetic with checkable steps: the verifiable task of cDPO and GRPO/D³S (`data.task.kind=arith`).

A question sums 2..4 numbers of 1..2 digits (`12+34+5=`); the solution adds them left to right, one step per
addition, then states the answer after `#`:

    12+34+5=  ->  12+34=46 46+5=51 #51

Every step is checkable on its own, so a wrong solution has a *first wrong step*: the first step whose operands
or result differ from the correct running sum (or that is missing or malformed). cDPO's critical-token analysis
asks whether the lowest-scored token of a wrong solution falls inside that step; `grade` returns each step's
character span in the completion for that. The final answer is the integer after `#` (`final_answer`), which
is what an RL reward checks.

The skill of a question is its number of additions minus one (`n_operands - 2`): 0, 1, 2 — Skill-It and
curricula can order prompts by it. Held-out evaluation questions never appear in any training file.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass, field
from pathlib import Path

from src.data.cache import atomic_write_lines

GENERATOR_VERSION = 1
_STEP = re.compile(r"^(\d+)\+(\d+)=(\d+)$")
_QUESTION = re.compile(r"^\d+(\+\d+)+=$")


@dataclass(frozen=True)
class Problem:
    """A sum of `operands`, asked as `a+b+...=`."""

    operands: tuple[int, ...]

    @property
    def question(self) -> str:
        return "+".join(map(str, self.operands)) + "="

    @property
    def answer(self) -> int:
        return sum(self.operands)

    @property
    def skill(self) -> int:
        return len(self.operands) - 2

    def partial_sums(self) -> list[int]:
        """The correct running value after each step: [a+b, a+b+c, ...]."""
        out, acc = [], self.operands[0]
        for x in self.operands[1:]:
            acc += x
            out.append(acc)
        return out

    def solution(self) -> str:
        """The reference completion: one `x+y=z` per step, space-separated, then `#answer`."""
        steps, acc = [], self.operands[0]
        for x in self.operands[1:]:
            steps.append(f"{acc}+{x}={acc + x}")
            acc += x
        return " ".join(steps) + f" #{acc}"

    def wrong_solution(self, rng: random.Random) -> str:
        """A well-formed solution with one arithmetic slip: a random step's result is off by 1..9 (never below 0)
        and the later steps carry the wrong value on correctly, so the final answer is wrong too. The rejected
        response of the task's preference pairs: it differs from `solution()` from the slip on."""
        slip = rng.randrange(len(self.operands) - 1)
        steps, acc = [], self.operands[0]
        for i, x in enumerate(self.operands[1:]):
            result = acc + x
            if i == slip:
                result += rng.choice([d for d in range(-9, 10) if d and result + d >= 0])
            steps.append(f"{acc}+{x}={result}")
            acc = result
        return " ".join(steps) + f" #{acc}"


def parse_question(question: str) -> Problem | None:
    """The problem a question text asks, or None when it is not one of ours."""
    q = question.strip()
    if not _QUESTION.match(q):
        return None
    return Problem(tuple(int(x) for x in q[:-1].split("+")))


def final_answer(completion: str) -> int | None:
    """The integer right after the first `#`, or None (no `#`, or no digits after it)."""
    m = re.search(r"#(\d+)", completion)
    return int(m.group(1)) if m else None


@dataclass(frozen=True)
class Grade:
    """A completion checked against its question.

    correct: the final answer equals the true sum. well_formed: every step parses, there are exactly as many steps
    as additions, and an answer follows. first_wrong_step: index of the first step that is wrong, missing or
    malformed (len(steps) when only the `#answer` is wrong or missing), None when every step and the answer are
    right. step_spans: [start, end) character spans of each written step in the completion, then the `#answer` span
    when present.
    """

    correct: bool
    answer: int | None
    well_formed: bool
    first_wrong_step: int | None
    step_spans: list[tuple[int, int]] = field(default_factory=list)


def grade(question: str | Problem, completion: str) -> Grade:
    """Check every step of `completion` against the problem `question` asks (see Grade)."""
    problem = question if isinstance(question, Problem) else parse_question(question)
    if problem is None:
        raise ValueError(f"not an arithmetic question: {question!r}")
    body, hash_, _ = completion.partition("#")
    answer = final_answer(completion)
    spans: list[tuple[int, int]] = []
    first_wrong: int | None = None
    expected = problem.partial_sums()
    acc = problem.operands[0]
    for i, m in enumerate(re.finditer(r"\S+", body)):
        spans.append((m.start(), m.end()))
        step = _STEP.match(m.group())
        ok = (
            step is not None and i < len(expected)
            and (int(step.group(1)), int(step.group(2)), int(step.group(3))) == (acc, problem.operands[i + 1],
                                                                                 expected[i])
        )
        if i < len(expected):
            acc = expected[i]
        if not ok and first_wrong is None:
            first_wrong = i
    n_written = len(spans)
    if first_wrong is None and n_written < len(expected):
        first_wrong = n_written  # a step is missing
    if hash_:
        m = re.match(r"#\d*", completion[len(body):])
        spans.append((len(body), len(body) + (m.end() if m else 1)))
    if first_wrong is None and answer != problem.answer:
        first_wrong = n_written  # every step right, the stated answer wrong or missing
    well_formed = (
        bool(hash_) and answer is not None and n_written == len(expected)
        and all(_STEP.match(body[s:e]) for s, e in spans[:n_written])
    )
    return Grade(answer == problem.answer, answer, well_formed, first_wrong, spans)


def sample_problem(rng: random.Random, operands: tuple[int, int] = (2, 4), digits: tuple[int, int] = (1, 2)) -> Problem:
    """A problem with a uniform number of operands in `operands` and each operand's digit count uniform in
    `digits` (so 1- and 2-digit numbers are equally common)."""
    n = rng.randint(*operands)
    values = []
    for _ in range(n):
        d = rng.randint(*digits)
        values.append(rng.randint(0 if d == 1 else 10 ** (d - 1), 10**d - 1))
    return Problem(tuple(values))


def eval_problems(n_eval: int, seed: int, operands: tuple[int, int] = (2, 4),
                  digits: tuple[int, int] = (1, 2)) -> list[Problem]:
    """The held-out problems (distinct, seeded)."""
    rng = random.Random(seed * 7919 + 11)
    out: dict[Problem, None] = {}
    while len(out) < n_eval:
        out[sample_problem(rng, operands, digits)] = None
    return list(out)


def ensure_arith_files(
    cache_dir: str | Path,
    n_train: int = 20000,
    n_prompts: int = 2000,
    n_eval: int = 300,
    seed: int = 0,
    operands: tuple[int, int] | list[int] = (2, 4),
    digits: tuple[int, int] | list[int] = (1, 2),
) -> dict[str, Path]:
    """Generate (once, cached, atomic) the task's files; none holds an evaluation question.

    pretrain: {"text": question + solution} (the corpus the BPE is trained on); sft: {"prompt", "response"} for
    supervised training of the base policy; sft_chat: the same as chats, {"messages": [user question, assistant
    solution]} (a chat model's SFT through its chat template, `experiment=sft/smollm2`); prompts: {"prompt",
    "answer", "skill"}, questions to sample or do RL on (disjoint from the SFT questions, so sampling sees
    questions the SFT data did not solve); prompts_chat: the same questions as user turns (GRPO on a chat model,
    `experiment=grpo/smollm2`); preference_chat: a pair per prompts question, the correct solution chosen and one
    with an arithmetic slip rejected (`Problem.wrong_solution`, `experiment=dpo/smollm2`); eval: the held-out
    questions in the same form as prompts.
    """
    operands, digits = tuple(operands), tuple(digits)
    root = Path(cache_dir) / "tasks"
    tag = (f"arith-v{GENERATOR_VERSION}-n{n_train}-p{n_prompts}-e{n_eval}-s{seed}"
           f"-o{operands[0]}_{operands[1]}-d{digits[0]}_{digits[1]}")
    paths = {k: root / f"{tag}-{k}.jsonl"
             for k in ("pretrain", "sft", "sft_chat", "prompts", "prompts_chat", "preference_chat", "eval")}
    if all(p.is_file() for p in paths.values()):
        return paths
    held = eval_problems(n_eval, seed, operands, digits)
    seen = set(held)
    rng = random.Random(seed)

    def fresh(n: int) -> list[Problem]:
        out: list[Problem] = []
        while len(out) < n:
            p = sample_problem(rng, operands, digits)
            if p not in seen:
                seen.add(p)
                out.append(p)
        return out

    sft, prompts = fresh(n_train), fresh(n_prompts)

    def user(p: Problem) -> dict[str, str]:
        return {"role": "user", "content": p.question}

    def rl_row(p: Problem) -> str:
        return json.dumps({"prompt": p.question, "answer": p.answer, "skill": p.skill})

    atomic_write_lines(paths["pretrain"], [json.dumps({"text": p.question + p.solution()}) for p in sft])
    atomic_write_lines(paths["sft"], [json.dumps({"prompt": p.question, "response": p.solution()}) for p in sft])
    atomic_write_lines(paths["sft_chat"], [json.dumps({"messages": [user(p), {"role": "assistant",
                                                                             "content": p.solution()}]})
                                           for p in sft])
    atomic_write_lines(paths["prompts"], [rl_row(p) for p in prompts])
    atomic_write_lines(paths["prompts_chat"], [json.dumps({"prompt": [user(p)], "answer": p.answer, "skill": p.skill})
                                               for p in prompts])
    slips = random.Random(seed * 104729 + 3)  # its own stream: the other files do not depend on it
    atomic_write_lines(paths["preference_chat"], [json.dumps({
        "prompt": [user(p)], "chosen": [{"role": "assistant", "content": p.solution()}],
        "rejected": [{"role": "assistant", "content": p.wrong_solution(slips)}]}) for p in prompts])
    atomic_write_lines(paths["eval"], [rl_row(p) for p in held])
    return paths


def arith_prompts() -> list[str]:
    return ["12+34+5=", "7+86=", "40+9+13+58="]
