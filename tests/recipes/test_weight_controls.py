"""cDPO's weight controls keep the amount of weight and move it: the docstring's worked example, the sum over the
trained tokens, the end token and cut tokens in place, and determinism from the rng."""

from __future__ import annotations

import random

import pytest

from src.recipes.weight_controls import control_weights


def test_the_worked_example() -> None:
    w = [0.9, 0.1, 0.5, 1.0]
    assert control_weights(w, 4, "constant", random.Random(0)) == pytest.approx([0.5, 0.5, 0.5, 1.0])
    shuffled = control_weights(w, 4, "shuffled", random.Random(0))
    assert sorted(shuffled[:3]) == [0.1, 0.5, 0.9] and shuffled[3] == 1.0
    assert sum(shuffled) == pytest.approx(2.5)


@pytest.mark.parametrize("mode", ["shuffled", "constant"])
def test_cut_tokens_and_the_end_token_keep_their_weights(mode: str) -> None:
    # 5 response tokens of which 3 reach the loss (seq_len cut the rest: weight 0) + the end token (cut too)
    w = [0.2, 0.9, 0.4, 0.0, 0.0, 1.0]
    got = control_weights(w, 3, mode, random.Random(1))
    assert got[3:] == [0.0, 0.0, 1.0]
    assert sum(got[:3]) == pytest.approx(1.5)


def test_shuffles_differ_between_pairs_but_repeat_with_the_seed() -> None:
    w = [i / 10 for i in range(10)] + [1.0]
    a = control_weights(w, 11, "shuffled", random.Random(7))
    assert a == control_weights(w, 11, "shuffled", random.Random(7))
    assert a != control_weights(w, 11, "shuffled", random.Random(8)) and a != w


def test_unknown_mode_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown weight control 'flat'"):
        control_weights([1.0], 1, "flat", random.Random(0))
