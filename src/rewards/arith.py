"""The verifiable reward of the arithmetic task (src/data/tasks/arith.py): is the integer after `#` the answer?"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from src.data.tasks.arith import final_answer


class ArithAnswerReward:
    """1.0 when the completion's final answer (the integer after the first `#`) equals the record's `answer`,
    else 0.0 (no `#`, no digits, or another number). Needs the `answer` metadata column.

    Example: prompt "12+34+5=", completion "12+34=46 46+5=51 #51", answer 51 -> 1.0; "... #50" -> 0.0.
    """

    min_score, max_score = 0.0, 1.0  # the range RewardSet.max_total reads (Skill-It's reward_max: auto)

    def __call__(self, prompts: Sequence[str], completions: Sequence[str], answer: Sequence[Any] | None = None,
                 **metadata: Any) -> list[float]:
        if answer is None:
            raise ValueError("the arithmetic reward needs an `answer` column in the prompt records")
        out = []
        for completion, truth in zip(completions, answer):
            got = final_answer(completion)
            out.append(float(got is not None and got == int(truth)))
        return out

    def final_answer(self, completion: str) -> str | None:
        """The integer after the first `#` as text (None without one): cDPO groups solutions by it."""
        got = final_answer(completion)
        return None if got is None else str(got)
