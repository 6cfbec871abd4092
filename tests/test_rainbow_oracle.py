"""scripts/rainbow_oracle.py: the sampler on the exact posterior of data=rainbow_lengths (a perfectly calibrated
model). It is the check that the experiment can show <eos> overflow at all, so its hand-derived cases are pinned."""

from __future__ import annotations

import importlib.util
import sys

import pytest

from tests.helpers import ROOT

_spec = importlib.util.spec_from_file_location("rainbow_oracle", ROOT / "scripts" / "rainbow_oracle.py")
oracle = importlib.util.module_from_spec(_spec)
sys.modules["rainbow_oracle"] = oracle
_spec.loader.exec_module(oracle)


@pytest.mark.parametrize("canvas", [16, 64])
@pytest.mark.parametrize("m", [2, 3, 4])
def test_eos_padding_and_one_pad_collapse_to_one_token(canvas: int, m: int) -> None:
    """By hand (EOS, L = 12): positions 13.. are <eos> for every n (p = 1) and go first; then p(eos at i | eos at
    i+1) = P(n < i | n <= i) = (i-1)/i >= 1/2 >= 1/m beats any digit, down to i = 2; position 1 is a digit."""
    length, early = oracle.greedy_decode(canvas, 12, m, "eos")
    assert length == 1 and early == 1.0
    assert oracle.greedy_decode(canvas, 12, m, "rainbow", 1)[0] == 1


def test_seven_pads_keep_answers_long_at_every_canvas() -> None:
    """With K = 7 a far pad is at most 2/12 likely, less than a digit's 1/m for m <= 4 at first: digits go first."""
    lens = {c: [oracle.greedy_decode(c, 12, m, "rainbow", 7)[0] for m in (2, 3, 4)] for c in (16, 32, 64)}
    assert all(sum(v) / 3 >= 0.75 * 6.5 for v in lens.values())
    assert lens[16] == lens[32] == lens[64]


def test_cli_prints_the_table(capsys: pytest.CaptureFixture[str]) -> None:
    oracle.main(["--max-len", "4", "--digits", "2", "2", "--canvases", "8", "--pads", "7"])
    out = capsys.readouterr().out
    assert "| eos | 1.00 | 1.00 |" in out and "rainbow K=7" in out
    with pytest.raises(SystemExit):
        oracle.main(["--max-len", "12", "--canvases", "8"])
