"""A format reward: does the completion match a regular expression (e.g. end with `#<number>`)?"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any


class FormatReward:
    """1.0 when `pattern` is found in the completion (`re.search`; `full_match=True`: the whole completion,
    surrounding whitespace stripped, must match), else 0.0.

    Example: pattern `#\\d+` gives "46+5=51 #51" 1.0 and "46+5=51" 0.0.
    """

    min_score, max_score = 0.0, 1.0  # the range RewardSet.max_total reads (Skill-It's reward_max: auto)

    def __init__(self, pattern: str = r"#\d+", full_match: bool = False) -> None:
        try:
            self.regex = re.compile(pattern)
        except re.error as err:
            raise ValueError(f"reward format pattern {pattern!r} is not a valid regular expression: {err}") from None
        self.full_match = bool(full_match)

    def __call__(self, prompts: Sequence[str], completions: Sequence[str], **metadata: Any) -> list[float]:
        if self.full_match:
            return [float(self.regex.fullmatch(c.strip()) is not None) for c in completions]
        return [float(self.regex.search(c) is not None) for c in completions]
