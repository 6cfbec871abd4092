"""Can `experiment=rainbow/lengths` show <eos> overflow at all? The LLaDA sampler on a perfectly calibrated model.

    python scripts/rainbow_oracle.py                      # the task's defaults: L = 12, m = 2..4, canvases 16/32/64
    python scripts/rainbow_oracle.py --max-len 8 --digits 3 3 --canvases 16 64 --pads 1 7

A denoiser that has learned the task exactly predicts, at each masked canvas position, the posterior of the token
given the prompt and the committed tokens. On `data=rainbow_lengths` that posterior is simple: the answer length n
is uniform over the lengths consistent with what is committed (a digit at i says n >= i; an <eos> at i says n < i
under <eos> padding, n = i - 1 under Rainbow padding; pad_k at i says n <= i - 2 and (i - n - 2) mod K = k), and
each answer position holds any of the prompt's m digits with probability 1/m, whatever n is. This script runs the
sampler the length evaluation uses (src/models/components/mdlm_sampler.py: greedy, low-confidence remasking, one
block, steps = canvas, one commit per step; ties go to the earlier position, as its stable sort does, and to a
digit over a special token, as argmax does, bytes having the lower ids) on that exact posterior, in exact fractions.

What it shows: under <eos> padding (and Rainbow with K = 1) the calibrated model is surer of the end token than of
any digit from about the middle of the length range on, commits it, becomes surer still of the end token's left
neighbour, and ends with 1-token answers at every canvas; with K = 7 pads no filler token is that sure, digits go
first and answers stay long. So the experiment can separate the paddings, and a trained model that does not is
off calibration in the direction the paper's fix does not need. Rows are means over m (uniform over the prompt's
possible digit counts), beside the data's mean length (L + 1) / 2.
"""

from __future__ import annotations

import argparse
from fractions import Fraction

END, DIGIT = "eos", "digit"


def _token(i: int, n: int, padding: str, k: int) -> object:
    """The token at canvas position i (1-based) of an answer of n digits."""
    if i <= n:
        return DIGIT
    if i == n + 1 or padding == "eos":
        return END
    return ("pad", (i - n - 2) % k)


def _keep(n: int, i: int, tok: object, padding: str, k: int) -> bool:
    """Whether an answer of n digits agrees with `tok` committed at position i."""
    return _token(i, n, padding, k) == tok


def greedy_decode(canvas: int, max_len: int, m: int, padding: str = "eos", k: int = 7
                  ) -> tuple[int, float]:
    """(decoded answer length, share of end tokens among the first half's commits) of the sampler run on the exact
    posterior of the task (module docstring)."""
    lengths = list(range(1, max_len + 1))
    committed: dict[int, object] = {}
    early = 0
    for step in range(canvas):
        best: tuple[Fraction, int, object] | None = None
        for i in range(1, canvas + 1):
            if i in committed:
                continue
            probs: dict[object, Fraction] = {}
            for n in lengths:
                tok = _token(i, n, padding, k)
                probs[tok] = probs.get(tok, Fraction(0)) + Fraction(1, len(lengths))
            if DIGIT in probs:
                probs[DIGIT] /= m  # one of the m digits
            tok, conf = max(probs.items(), key=lambda kv: (kv[1], kv[0] == DIGIT))
            if best is None or conf > best[0]:  # strict: ties keep the earlier position
                best = (conf, i, tok)
        assert best is not None
        _, i, tok = best
        committed[i] = tok
        early += tok == END and step < canvas / 2
        lengths = [n for n in lengths if _keep(n, i, tok, padding, k)]
    first_end = min((i for i, t in committed.items() if t == END), default=canvas + 1)
    return sum(committed[i] == DIGIT for i in range(1, first_end)), early / (canvas // 2 or 1)


def table(max_len: int, digits: tuple[int, int], canvases: list[int], pads: list[int]) -> str:
    ms = list(range(digits[0], digits[1] + 1))
    arms = [("eos", 1)] + [("rainbow", k) for k in pads]
    head = "| arm | " + " | ".join(f"len@{c}" for c in canvases) + " | " + " | ".join(
        f"early_end@{c}" for c in canvases) + " |"
    lines = [f"Calibrated model, L = {max_len}, m = {digits[0]}..{digits[1]}; the data's mean length is "
             f"{(max_len + 1) / 2:g}.", "", head, "|---" * (1 + 2 * len(canvases)) + "|"]
    for padding, k in arms:
        runs = [[greedy_decode(c, max_len, m, padding, k) for m in ms] for c in canvases]
        lens = [sum(r[0] for r in rs) / len(rs) for rs in runs]
        early = [sum(r[1] for r in rs) / len(rs) for rs in runs]
        name = "eos" if padding == "eos" else f"rainbow K={k}"
        lines.append(f"| {name} | " + " | ".join(f"{v:.2f}" for v in lens) + " | "
                     + " | ".join(f"{v:.2f}" for v in early) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--max-len", type=int, default=12, help="L: answer lengths 1..L (data.task.max_len)")
    ap.add_argument("--digits", type=int, nargs=2, default=[2, 4], metavar=("MIN", "MAX"),
                    help="m, the prompt's distinct digits (data.task.digits)")
    ap.add_argument("--canvases", type=int, nargs="+", default=[16, 32, 64])
    ap.add_argument("--pads", type=int, nargs="+", default=[1, 3, 7], help="Rainbow's K values")
    a = ap.parse_args(argv)
    if any(c < a.max_len + 1 for c in a.canvases):
        ap.error(f"every canvas must hold the longest answer and its end token (>= {a.max_len + 1})")
    print(table(a.max_len, (a.digits[0], a.digits[1]), a.canvases, a.pads))


if __name__ == "__main__":
    main()
