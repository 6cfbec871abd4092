"""cDPO step 1: from k graded samples per question, the positive set, the negative set and the preference pairs.

Per question, responses are grouped by final answer (no answer is a cluster of its own) and clusters sorted by
size (ties: by answer, so the choice is deterministic):
- positive set: the distinct responses of the most frequent CORRECT answer (a verifiable task has one correct
  answer, so: every distinct correct response);
- negative set: one response from each wrong-answer cluster, largest first, until the clusters taken hold at least
  `negative_coverage` (50 %) of the question's wrong responses;
- pairs: chosen = a response with the correct answer, rejected = a response with the most frequent wrong answer
  (`pairs_per_question` distinct pairs at most). Questions with only right or only wrong responses give no pair.

Pure: rows in, lists of records out; the choice within a cluster is by a seeded `random.Random`.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Selection:
    positive: list[dict[str, Any]] = field(default_factory=list)  # {"prompt", "response"}
    negative: list[dict[str, Any]] = field(default_factory=list)  # {"prompt", "response"}
    pairs: list[dict[str, Any]] = field(default_factory=list)  # {"prompt", "chosen", "rejected", "rejected_*"}

    def stats(self) -> dict[str, int]:
        return {"positive": len(self.positive), "negative": len(self.negative), "pairs": len(self.pairs)}


def _clusters(completions: Sequence[dict[str, Any]]) -> list[tuple[Any, list[dict[str, Any]]]]:
    groups: dict[Any, list[dict[str, Any]]] = defaultdict(list)
    for c in completions:
        groups[c["answer"]].append(c)
    return sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0] is None, kv[0] if kv[0] is not None else 0))


def _distinct(comps: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    seen: dict[str, dict[str, Any]] = {}
    for c in comps:
        seen.setdefault(c["text"], c)
    return list(seen.values())


def select_contrastive_data(rows: Sequence[dict[str, Any]], negative_coverage: float = 0.5,
                            pairs_per_question: int = 1, seed: int = 0) -> Selection:
    """See the module docstring. `rows`: the sampling stage's output (prompt + graded completions)."""
    if not 0.0 < negative_coverage <= 1.0:
        raise ValueError(f"negative_coverage must be in (0, 1], got {negative_coverage}")
    if pairs_per_question < 1:
        raise ValueError(f"pairs_per_question must be >= 1, got {pairs_per_question}")
    rng = random.Random(seed)
    sel = Selection()
    for row in rows:
        prompt, comps = row["prompt"], row["completions"]
        clusters = _clusters(comps)
        right = [c for ans, cs in clusters if cs[0]["correct"] for c in cs]
        wrong = [(ans, cs) for ans, cs in clusters if not cs[0]["correct"]]
        sel.positive += [{"prompt": prompt, "response": c["text"]} for c in _distinct(right)]
        n_wrong, covered = sum(len(cs) for _, cs in wrong), 0
        for _, cs in wrong:
            if covered >= negative_coverage * n_wrong:
                break
            sel.negative.append({"prompt": prompt, "response": rng.choice(cs)["text"]})
            covered += len(cs)
        if right and wrong:
            chosen = _distinct(right)
            rejected = _distinct(wrong[0][1])
            rng.shuffle(chosen)
            rng.shuffle(rejected)
            for c, r in list(zip(chosen, rejected))[:pairs_per_question]:
                sel.pairs.append({"prompt": prompt, "chosen": c["text"], "rejected": r["text"],
                                  "rejected_first_wrong_step": r["first_wrong_step"]})
    return sel
