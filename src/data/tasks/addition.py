"""Multi-digit addition for StochasTok: documents `a+b=` followed by the REVERSED digits of a + b.

a, b are uniform in 100..999 (spec). The sum is written least-significant digit first, the order in which a
left-to-right model can compute it. A BPE trained on this text merges digits into multi-digit tokens, so the
evaluation can ask the same question tokenized as in training and character by character (an unseen
segmentation); src/callbacks/task_eval.py scores greedy decoding of the answer only.

Held-out problems: every (a, b) pair of the evaluation set is excluded from the training documents.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from src.data.cache import atomic_write_lines

GENERATOR_VERSION = 1
LOW, HIGH = 100, 999


def problem(a: int, b: int) -> tuple[str, str]:
    """(question `a+b=`, answer = reversed digits of a + b)."""
    return f"{a}+{b}=", str(a + b)[::-1]


def eval_pairs(n_eval: int, seed: int) -> list[tuple[int, int]]:
    """The held-out evaluation pairs (distinct, seeded)."""
    rng = random.Random(seed * 7919 + 3)
    pairs: dict[tuple[int, int], None] = {}
    while len(pairs) < n_eval:
        pairs[(rng.randint(LOW, HIGH), rng.randint(LOW, HIGH))] = None
    return list(pairs)


def ensure_addition_files(
    cache_dir: str | Path, n_docs: int = 50000, n_eval: int = 500, seed: int = 0
) -> dict[str, Path]:
    """Generate (once, cached, atomic) the training documents, none of them an evaluation pair."""
    path = Path(cache_dir) / "tasks" / f"addition-v{GENERATOR_VERSION}-n{n_docs}-e{n_eval}-s{seed}.jsonl"
    if not path.is_file():
        held = set(eval_pairs(n_eval, seed))
        rng = random.Random(seed)
        lines = []
        while len(lines) < n_docs:
            a, b = rng.randint(LOW, HIGH), rng.randint(LOW, HIGH)
            if (a, b) in held:
                continue
            q, ans = problem(a, b)
            lines.append(json.dumps({"text": q + ans}))
        atomic_write_lines(path, lines)
    return {"pretrain": path}


def addition_prompts() -> list[str]:
    return ["123+456=", "905+318="]
