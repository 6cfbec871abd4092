"""Per-digit addition skills (Skill-It's addition task): add two zero-padded n-digit numbers, one digit per skill.

Digits are space-separated so every digit is its own token. Skill i (0-based) = the digit of the sum at place
10**i, counted from the ones place: skill 0 needs no carry, skill i needs the carries of places below it, which
is why the paper's graph has training on the tens digit help the ones digit (ADDITION_GRAPH: that edge only).

Record: {"prompt": "1 2 3 + 4 5 6 , digit 2 ?", "response": "7", "skill": 1}.
"""

from __future__ import annotations

import random

ADDITION_VERSION = 1
# Spec graph for 3 digits (rows = training skill): the tens digit helps the ones digit.
ADDITION_GRAPH = (
    (1.0, 0.0, 0.0),
    (0.5, 1.0, 0.0),
    (0.0, 0.0, 1.0),
)


def spaced(x: int, n_digits: int) -> str:
    return " ".join(f"{x:0{n_digits}d}")


def addition_example(rng: random.Random, skill: int, n_digits: int = 3) -> dict[str, object]:
    """One question: digit `skill` (from the ones place) of the sum of two random n-digit numbers."""
    if not 0 <= skill < n_digits:
        raise ValueError(f"skill {skill} not in [0, {n_digits})")
    a, b = rng.randrange(10**n_digits), rng.randrange(10**n_digits)
    digit = (a + b) // 10**skill % 10
    prompt = f"{spaced(a, n_digits)} + {spaced(b, n_digits)} , digit {skill + 1} ?"
    return {"prompt": prompt, "response": str(digit), "skill": skill}


def generate_addition(counts: list[int], seed: int = 0, n_digits: int = 3) -> list[dict[str, object]]:
    """`counts[i]` questions of skill i, from a generator seeded by (seed, version, n_digits)."""
    if len(counts) != n_digits:
        raise ValueError(f"{len(counts)} counts for {n_digits} digit skills")
    rng = random.Random(f"addition-v{ADDITION_VERSION}-d{n_digits}-s{seed}")
    return [addition_example(rng, s, n_digits) for s, n in enumerate(counts) for _ in range(n)]
