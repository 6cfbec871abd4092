"""LEGO (Zhang et al. 2022) as used by Skill-It: resolve a chain of k boolean variables from shuffled clauses.

A chain `a = val 1, b = not a, c = val b, ...`: the first variable gets a random bit, every next one copies or
negates its predecessor (random), variable names are distinct random letters, and the clauses are shuffled so the
model must follow the chain rather than read it left to right. Skill i (0-based) = ask for the (i+1)-th variable
of the chain: skill 0 is a lookup, skill 4 needs four hops. The answer is one bit, the record's single target.

Record: {"prompt": "<clauses>. <var> ?", "response": "0" | "1", "skill": i}.
"""

from __future__ import annotations

import random
import string

LEGO_VERSION = 1
# Reference "random" pool of the paper: imbalanced 1:1:1:3:5 over the 5 skills.
LEGO_IMBALANCED = (1, 1, 1, 3, 5)
# Spec graph (rows = training skill): skill 2 (1-based) helps skills 1, 3, 4; off-diagonal edges 0.5.
LEGO_GRAPH = (
    (1.0, 0.0, 0.0, 0.0, 0.0),
    (0.5, 1.0, 0.5, 0.5, 0.0),
    (0.0, 0.0, 1.0, 0.0, 0.0),
    (0.0, 0.0, 0.0, 1.0, 0.0),
    (0.0, 0.0, 0.0, 0.0, 1.0),
)


def lego_example(rng: random.Random, skill: int, k: int = 5) -> dict[str, object]:
    """One LEGO question about the (skill+1)-th variable of a fresh random chain of k variables."""
    if not 0 <= skill < k:
        raise ValueError(f"skill {skill} not in [0, {k})")
    names = rng.sample(string.ascii_lowercase, k)
    values = [rng.randint(0, 1)]
    clauses = [f"{names[0]} = val {values[0]}"]
    for i in range(1, k):
        negate = rng.random() < 0.5
        values.append(1 - values[-1] if negate else values[-1])
        clauses.append(f"{names[i]} = {'not' if negate else 'val'} {names[i - 1]}")
    rng.shuffle(clauses)
    return {"prompt": ", ".join(clauses) + f". {names[skill]} ?", "response": str(values[skill]), "skill": skill}


def generate_lego(counts: list[int], seed: int = 0, k: int = 5) -> list[dict[str, object]]:
    """`counts[i]` questions of skill i, from a generator seeded by (seed, version, k)."""
    if len(counts) != k:
        raise ValueError(f"{len(counts)} counts for k={k} skills")
    rng = random.Random(f"lego-v{LEGO_VERSION}-k{k}-s{seed}")
    return [lego_example(rng, s, k) for s, n in enumerate(counts) for _ in range(n)]
