"""Verifiable rewards for math word problems: GSM8K's `#### <number>` and MATH's `\\boxed{...}` answers.

Both read a record's `answer` column (as `data.format=prompt` carries it) and score 1.0 when the completion's final
answer equals it, else 0.0 (no answer found counts as wrong, never as an error).

- `GSM8KReward`: the number after the last `####`, else the last number in the text; numbers compare as exact
  rationals after removing thousands separators, a leading currency sign, a trailing `%` or unit word:
  "#### 1,234" = "1234", "$-5.50" = "-11/2", "#### 72 apples" = "72".
- `BoxedAnswerReward`: the content of the last `\\boxed{...}` (braces balanced, `\\fbox` too). Equal when the
  normalised strings agree (`\\dfrac` → `\\frac`, `\\left`/`\\right`, spaces, `$`, a trailing period dropped), or
  both are numbers with the same value (`\\frac{1}{2}` = `0.5` = `1/2`), or sympy finds the two expressions equal
  (`\\sqrt{8}` = `2\\sqrt{2}`, `x^2+2x+1` = `(x+1)^2`). sympy is already a dependency of torch. The full LaTeX
  equivalence of Hugging Face's math-verify (sets, intervals, matrices) is not attempted: answers of those kinds
  compare as normalised strings.
"""

from __future__ import annotations

import abc
import re
from collections.abc import Sequence
from fractions import Fraction
from typing import Any

_NUMBER = re.compile(r"[-−]?\$?\s*\d[\d,]*(?:\.\d+)?(?:\s*/\s*\d+)?|[-−]?\$?\s*\.\d+")


def parse_number(text: str | None) -> Fraction | None:
    """The exact value of a number written as users write answers, or None.

    Accepts thousands separators ("1,234"), a unicode minus ("−5"), a currency sign ("$12"), a percent sign or a unit
    word after it ("50%", "12 apples"), decimals ("3.50") and fractions ("3/4", "\\frac{3}{4}", "\\dfrac34" is not).
    """
    if text is None:
        return None
    t = text.strip().replace("−", "-").rstrip(".").strip()
    t = re.sub(r"^\\\$|^\$", "", t).replace("\\$", "").replace("$", "")
    frac = re.fullmatch(r"(-?)\\d?frac\{\s*(-?\d+)\s*\}\{\s*(\d+)\s*\}", t)
    if frac:
        if int(frac.group(3)) == 0:
            return None
        value = Fraction(int(frac.group(2)), int(frac.group(3)))
        return -value if frac.group(1) else value
    m = re.fullmatch(r"(-?)\s*(\d[\d,]*(?:\.\d+)?|\.\d+)(?:\s*/\s*(\d+))?\s*(?:%|\\%|[A-Za-z][A-Za-z ]*)?", t)
    if not m:
        return None
    digits = m.group(2)
    if "," in digits and not re.fullmatch(r"\d{1,3}(,\d{3})+(\.\d+)?", digits):
        return None  # "1,23" is not a thousands separator: refuse rather than guess
    value = Fraction(digits.replace(",", ""))
    if m.group(3) is not None:
        if int(m.group(3)) == 0:
            return None
        value /= int(m.group(3))
    return -value if m.group(1) else value


def gsm8k_final(completion: str) -> str | None:
    """The text after the last `####` (its first line), else the last number in the completion, else None."""
    if "####" in completion:
        tail = completion.rsplit("####", 1)[1].strip().splitlines()
        return tail[0].strip() if tail else None
    found = _NUMBER.findall(completion)
    return found[-1].strip() if found else None


def boxed(completion: str) -> str | None:
    """The content of the last `\\boxed{...}` or `\\fbox{...}` (nested braces balanced), else None."""
    starts = [m.end() for m in re.finditer(r"\\(?:boxed|fbox)\s*\{", completion)]
    if not starts:
        return None
    i, depth = starts[-1], 1
    for j in range(i, len(completion)):
        depth += {"{": 1, "}": -1}.get(completion[j], 0)
        if depth == 0:
            return completion[i:j].strip()
    return None  # unbalanced: the answer was cut off


def normalise_latex(s: str) -> str:
    """A canonical spelling of a short LaTeX answer: no spaces, `$`, `\\left`/`\\right`, `\\!`, trailing period;
    `\\dfrac`/`\\tfrac` → `\\frac`, `\\frac12` → `\\frac{1}{2}`; `^{x}` of one character → `^x`; a
    `\\text{...}` unit kept as plain text."""
    t = s.strip().strip("$").rstrip(".")
    for a, b in (("\\left", ""), ("\\right", ""), ("\\!", ""), ("\\,", ""), ("\\;", ""), ("\\dfrac", "\\frac"),
                 ("\\tfrac", "\\frac"), ("−", "-")):
        t = t.replace(a, b)
    t = re.sub(r"\\text\{([^}]*)\}", r"\1", t)
    t = re.sub(r"\\frac(\d)(\d)", r"\\frac{\1}{\2}", t)  # \frac12 = \frac{1}{2}
    t = re.sub(r"\^\{(.)\}", r"^\1", t)
    return re.sub(r"\s+", "", t)


def _to_sympy(s: str) -> Any:
    """A sympy expression of a simple LaTeX answer (fractions, roots, powers, implicit products), or None."""
    import sympy
    from sympy.parsing.sympy_parser import (
        convert_xor,
        implicit_multiplication_application,
        parse_expr,
        standard_transformations,
    )

    t = normalise_latex(s)
    for _ in range(4):  # nested \frac / \sqrt, innermost first
        t = re.sub(r"\\frac\{([^{}]*)\}\{([^{}]*)\}", r"((\1)/(\2))", t)
        t = re.sub(r"\\sqrt\{([^{}]*)\}", r"sqrt(\1)", t)
    t = t.replace("\\cdot", "*").replace("\\times", "*").replace("\\pi", "pi").replace("{", "(").replace("}", ")")
    if "\\" in t or not t:
        return None
    try:
        return parse_expr(t, transformations=(*standard_transformations, implicit_multiplication_application,
                                              convert_xor), evaluate=True, local_dict={"e": sympy.E})
    except Exception:  # noqa: BLE001 (anything sympy cannot read is simply not comparable this way)
        return None


def answers_match(got: str | None, truth: str) -> bool:
    """MATH-style equivalence of two short answers (module docstring)."""
    if got is None:
        return False
    a, b = normalise_latex(got), normalise_latex(str(truth))
    if a == b:
        return True
    x, y = parse_number(got), parse_number(str(truth))
    if x is not None and y is not None:
        return x == y
    ex, ey = _to_sympy(got), _to_sympy(str(truth))
    if ex is None or ey is None:
        return False
    try:
        import sympy

        return bool(sympy.simplify(ex - ey) == 0)
    except Exception:  # noqa: BLE001
        return False


class _AnswerReward(abc.ABC):
    """1.0 per completion whose answer `matches` the record's `answer` column, else 0.0 (never an error)."""

    min_score, max_score = 0.0, 1.0
    name = "answer"

    @abc.abstractmethod
    def matches(self, completion: str, truth: str) -> bool:
        """Whether the completion's answer equals `truth` (the record's answer, as text)."""

    def __call__(self, prompts: Sequence[str], completions: Sequence[str], answer: Sequence[Any] | None = None,
                 **metadata: Any) -> list[float]:
        if answer is None:
            raise ValueError(f"the {self.name} reward needs an `answer` column in the prompt records")
        return [float(self.matches(c, str(t))) for c, t in zip(completions, answer)]


class GSM8KReward(_AnswerReward):
    """1.0 when the completion's final number (after `####`, else the last number) equals the record's `answer`
    (itself a number or a GSM8K solution ending in `#### <number>`), else 0.0.

    Example: completion "... so she has 1,200 dollars. #### 1,200", answer "1200" -> 1.0; "#### 12" -> 0.0.
    """

    name = "gsm8k"

    def matches(self, completion: str, truth: str) -> bool:
        want, got = parse_number(gsm8k_final(truth)), parse_number(gsm8k_final(completion))
        return want is not None and got is not None and got == want

    def final_answer(self, completion: str) -> str | None:
        """The completion's answer in a canonical spelling, so that answers equal under `matches` are equal
        strings ("#### 1,200" and "1200.0" -> "1200"; "3/6" -> "1/2"); None when it has none. cDPO groups
        sampled solutions by it (src/recipes/cdpo_task.py)."""
        value = parse_number(gsm8k_final(completion))
        return None if value is None else str(value)


class BoxedAnswerReward(_AnswerReward):
    """1.0 when the last `\\boxed{...}` of the completion is equivalent to the record's `answer` (itself a plain
    answer or a solution with a `\\boxed{}`), else 0.0 (module docstring for what "equivalent" covers).

    Example: completion "... = \\boxed{\\dfrac{1}{2}}", answer "0.5" -> 1.0; no `\\boxed` -> 0.0.
    """

    name = "boxed-answer"

    def matches(self, completion: str, truth: str) -> bool:
        return answers_match(boxed(completion), boxed(truth) or truth)

    def final_answer(self, completion: str) -> str | None:
        """The last `\\boxed{}`'s content, normalised (`\\dfrac12` and `\\frac{1}{2}` are one answer) and, when it is a
        number, its exact value ("0.5" -> "1/2"); None without a box. Equivalences only sympy finds stay apart."""
        got = boxed(completion)
        if got is None:
            return None
        value = parse_number(got)
        return str(value) if value is not None else normalise_latex(got)
