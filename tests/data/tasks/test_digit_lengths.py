"""data=rainbow_lengths: answer lengths uniform and independent of the prompt, digits from the prompt's, held-out
problems never trained on, and the validity rule the length evaluation scores."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from src.data.errors import DataError
from src.data.tasks.digit_lengths import ensure_lengths_files, eval_problems, valid_answer


def _records(tmp_path: Path, **kw: object) -> list[dict]:
    path = ensure_lengths_files(tmp_path, **{"n_train": 3000, "n_eval": 200, **kw})
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_lengths_cover_1_to_max_len_whatever_the_prompt_and_digits_come_from_it(tmp_path: Path) -> None:
    recs = _records(tmp_path, max_len=6)
    lengths = Counter(len(r["response"]) for r in recs)
    assert set(lengths) == set(range(1, 7)) and min(lengths.values()) > 3000 / 6 * 0.8  # ~uniform
    for r in recs:
        digits = r["prompt"][2:-1]
        assert r["prompt"].startswith("w:") and r["prompt"].endswith("=") and 2 <= len(set(digits)) == len(digits) <= 4
        assert set(r["response"]) <= set(digits)
    # the same prompt is answered at different lengths: the prompt does not tell the length
    by_prompt: dict[str, set[int]] = {}
    for r in recs:
        by_prompt.setdefault(r["prompt"], set()).add(len(r["response"]))
    assert max(len(v) for v in by_prompt.values()) >= 4


def test_held_out_problems_are_never_trained_on(tmp_path: Path) -> None:
    recs = {(r["prompt"], r["response"]) for r in _records(tmp_path, max_len=12)}
    held = set(eval_problems(200, 12, 0))
    assert len(held) > 150 and not recs & held


def test_valid_answer_rule() -> None:
    assert valid_answer("w:38=", "3883", 12)
    assert not valid_answer("w:38=", "", 12)  # at least one token
    assert not valid_answer("w:38=", "3813", 12)  # 1 is not one of the prompt's digits
    assert not valid_answer("w:38=", "3" * 13, 12)  # longer than any answer of the data


def test_bad_task_settings_are_one_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="data.task.digits"):
        ensure_lengths_files(tmp_path, digits=[5, 3])
    with pytest.raises(DataError, match="max_len"):
        ensure_lengths_files(tmp_path, max_len=0)
