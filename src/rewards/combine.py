"""`RewardSet`: several reward callables, weighted and summed, with failures isolated per rollout.

Why the isolation: a reward is user code run on model output, which early in RL is often garbage. One rollout
whose reward raises (an unparsable number, a timeout in a sandbox) or returns NaN/None must not end a run hours in;
it is counted and scored as configured:
- `on_error: zero` — that function scores the rollout 0 (the other functions still count);
- `on_error: drop` — the rollout leaves the batch: no advantage, no loss (`RewardScores.valid` is False).

A function is first called once on the whole batch (batched rewards stay fast); if that call raises or returns the
wrong number of scores, it is called again one rollout at a time, so only the rollouts that fail are affected.

Total reward of rollout i: Σ_f weight_f · score_f(i). Example: weights {correct: 1, format: 0.1}, a rollout with the
right answer in the right format scores 1.1, a well-formatted wrong answer 0.1.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

ON_ERROR = ("zero", "drop")
RewardFn = Callable[..., Sequence[float]]


@dataclass
class RewardScores:
    """Scores of N rollouts.

    total:  [N] weighted sum (0.0 where a rollout is not valid).
    valid:  [N] False for rollouts dropped by `on_error: drop`.
    per_function: name -> [N] raw scores (NaN where that function failed).
    errors: name -> number of rollouts that function failed on (raised, NaN, None, not a number).
    """

    total: list[float]
    valid: list[bool]
    per_function: dict[str, list[float]] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)

    @property
    def n_errors(self) -> int:
        return sum(self.errors.values())


def _as_float(x: Any) -> float:
    """A score as a finite float, or NaN (None, NaN, inf, not a number)."""
    try:
        v = float(x)
    except (TypeError, ValueError):
        return math.nan
    return v if math.isfinite(v) else math.nan


class RewardSet:
    """Weighted sum of named reward callables (module docstring).

    functions: name -> callable `(prompts, completions, **metadata) -> list[float]` (a `_target_` in the config;
               `_partial_: true` for a plain function).
    weights:   name -> weight (default 1.0 for a name not listed).
    on_error:  `zero` or `drop`.
    """

    def __init__(self, functions: Mapping[str, RewardFn], weights: Mapping[str, float] | None = None,
                 on_error: str = "zero") -> None:
        if on_error not in ON_ERROR:
            raise ValueError(f"reward.on_error={on_error!r} is not one of {ON_ERROR} (zero: a failed score counts 0; "
                             "drop: the rollout leaves the batch)")
        functions = {k: v for k, v in dict(functions).items() if v is not None}
        if not functions:
            raise ValueError("reward.functions is empty: name at least one reward (e.g. reward=arith)")
        for name, fn in functions.items():
            if not callable(fn):
                raise ValueError(f"reward.functions.{name} is not callable ({type(fn).__name__}); give a `_target_` "
                                 "of a class with __call__, or of a function with `_partial_: true`")
        weights = dict(weights or {})
        unknown = set(weights) - set(functions)
        if unknown:
            raise ValueError(f"reward.weights names {sorted(unknown)}, which are not in reward.functions "
                             f"({sorted(functions)})")
        self.functions = functions
        self.weights = {k: float(weights.get(k, 1.0)) for k in functions}
        self.on_error = on_error

    @property
    def max_total(self) -> float | None:
        """The best total a rollout can score, Σ_f w_f · (max_score_f if w_f ≥ 0 else min_score_f), when every
        function declares its range (`min_score` / `max_score` attributes, as ArithAnswerReward and FormatReward
        do); None when one does not. Example: {correct: 1, format: 0.1}, both in [0, 1] -> 1.1."""
        best = 0.0
        for name, fn in self.functions.items():
            w = self.weights[name]
            bound = getattr(fn, "max_score" if w >= 0 else "min_score", None)
            if bound is None:
                return None
            best += w * float(bound)
        return best

    def final_answer(self, completion: str) -> str | None:
        """The completion's final answer as the first function that can read one says (a `final_answer(text)`
        method, as the arith, gsm8k and boxed rewards have); None when none can or it has no answer."""
        for fn in self.functions.values():
            read = getattr(fn, "final_answer", None)
            if callable(read):
                return read(completion)
        return None

    @property
    def reads_answers(self) -> bool:
        """Whether some function has `final_answer` (else solutions can only be grouped by their text)."""
        return any(callable(getattr(fn, "final_answer", None)) for fn in self.functions.values())

    def _scores(self, name: str, fn: RewardFn, prompts: Sequence[str], completions: Sequence[str],
                metadata: Mapping[str, Sequence[Any]]) -> list[float]:
        n = len(completions)
        try:
            raw = list(fn(list(prompts), list(completions), **{k: list(v) for k, v in metadata.items()}))
            if len(raw) == n:
                return [_as_float(x) for x in raw]
            log.warning("reward %s returned %d scores for %d rollouts; scoring one rollout at a time", name,
                        len(raw), n)
        except Exception as err:  # noqa: BLE001 (user code: any failure is isolated, counted and logged)
            log.warning("reward %s raised %s: %s; scoring one rollout at a time", name, type(err).__name__, err)
        out = []
        for i in range(n):
            try:
                one = list(fn([prompts[i]], [completions[i]], **{k: [v[i]] for k, v in metadata.items()}))
                out.append(_as_float(one[0]) if len(one) == 1 else math.nan)
            except Exception:  # noqa: BLE001
                out.append(math.nan)
        return out

    def __call__(self, prompts: Sequence[str], completions: Sequence[str],
                 **metadata: Sequence[Any]) -> RewardScores:
        n = len(completions)
        if len(prompts) != n or any(len(v) != n for v in metadata.values()):
            raise ValueError(f"{len(prompts)} prompts / {n} completions / metadata of other lengths: one per rollout")
        per: dict[str, list[float]] = {}
        errors: dict[str, int] = {}
        total = [0.0] * n
        valid = [True] * n
        for name, fn in self.functions.items():
            scores = self._scores(name, fn, prompts, completions, metadata)
            per[name], errors[name] = scores, sum(math.isnan(s) for s in scores)
            for i, s in enumerate(scores):
                if math.isnan(s):
                    valid[i] = valid[i] and self.on_error != "drop"
                else:
                    total[i] += self.weights[name] * s
        total = [t if v else 0.0 for t, v in zip(total, valid)]
        return RewardScores(total, valid, per, errors)
