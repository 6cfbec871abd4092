"""The LEGO and per-digit addition generators: every answer is right, skills ask what they say they ask."""

from __future__ import annotations

import re

from src.data.tasks.addition_skills import generate_addition
from src.data.tasks.lego import generate_lego


def resolve_lego(prompt: str) -> tuple[dict[str, int], list[str], str]:
    """Solve a LEGO prompt independently: (values, chain order, asked variable)."""
    clauses, question = prompt.rsplit(". ", 1)
    parsed = [re.fullmatch(r"(\w) = (val|not) (\w)", c.strip()).groups() for c in clauses.split(", ")]
    values: dict[str, int] = {}
    chain: list[str] = []
    while len(values) < len(parsed):
        for name, op, arg in parsed:
            if name in values:
                continue
            if arg in "01":
                values[name] = int(arg)
            elif arg in values:
                values[name] = 1 - values[arg] if op == "not" else values[arg]
            else:
                continue
            chain.append(name)
    return values, chain, question.removesuffix(" ?")


def test_lego_answers_are_correct_and_skill_is_chain_depth() -> None:
    recs = generate_lego([40] * 5, seed=3)
    orders = set()
    for r in recs:
        values, chain, asked = resolve_lego(r["prompt"])
        assert len(chain) == len(set(chain)) == 5  # distinct variable names
        assert str(values[asked]) == r["response"]
        assert chain.index(asked) == r["skill"]  # skill i asks for the (i+1)-th variable of the chain
        orders.add(tuple(c.split(" ")[0] == chain[0] for c in r["prompt"].split(", ")))
    assert len(orders) > 1  # clauses are shuffled: the root is not always first
    answers = [r["response"] for r in recs]
    assert 0.3 < answers.count("1") / len(answers) < 0.7


def test_lego_is_seeded_and_imbalanced_counts_are_respected() -> None:
    assert generate_lego([2, 2, 2, 2, 2], seed=1) == generate_lego([2, 2, 2, 2, 2], seed=1)
    assert generate_lego([2, 2, 2, 2, 2], seed=1) != generate_lego([2, 2, 2, 2, 2], seed=2)
    skills = [r["skill"] for r in generate_lego([1, 1, 1, 3, 5], seed=0)]
    assert [skills.count(i) for i in range(5)] == [1, 1, 1, 3, 5]


def test_addition_digit_skills() -> None:
    for r in generate_addition([30, 30, 30], seed=0):
        m = re.fullmatch(r"(\d) (\d) (\d) \+ (\d) (\d) (\d) , digit (\d) \?", r["prompt"])
        a, b = int("".join(m.groups()[:3])), int("".join(m.groups()[3:6]))
        assert int(m.group(7)) == r["skill"] + 1
        assert int(r["response"]) == (a + b) // 10 ** r["skill"] % 10  # digit from the ones place
