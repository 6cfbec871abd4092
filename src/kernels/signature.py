"""The one call signature of a per-token log-prob kernel, declared once.

Every implementation (`reference`, `chunked`, `triton`) and the dispatcher `token_logprobs` take the same
arguments with the same defaults, so a caller can swap one for another and the dispatcher can route by name
without adapting arguments. `TokenLogprobsFn` states that contract for type checkers; `implements` checks it at
import time (an implementation that renames, reorders or re-defaults a contract argument fails to import), so the
four definitions cannot drift apart. An implementation may take further keyword-only speed hints with defaults
(the chunked path's `chunk_size`, `grad_hint`); results never depend on them.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Protocol, TypeVar

from torch import Tensor

IGNORE_INDEX = -100

# name -> (kind, default) of every contract argument, in order; `inspect.Parameter.empty` = required.
_POS, _KW = inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY
CONTRACT: dict[str, tuple[object, object]] = {
    "hidden": (_POS, inspect.Parameter.empty),
    "weight": (_POS, inspect.Parameter.empty),
    "targets": (_POS, inspect.Parameter.empty),
    "bias": (_KW, None),
    "temperature": (_KW, 1.0),
    "ignore_index": (_KW, IGNORE_INDEX),
    "with_entropy": (_KW, False),
    "entropy_grad": (_KW, False),
}


class TokenLogprobsFn(Protocol):
    """Per-token log π(y) (and entropy) of softmax((h·Wᵀ + b) / temperature), without keeping [N, V] logits.

    hidden [N, d], weight [V, d], targets [N] (long), bias [V] or None (the dispatcher also takes leading dims
    [..., d] / [...] and restores them). Returns logp [N], or (logp [N], entropy [N]) when `with_entropy`.

    - Rows whose target is `ignore_index` give logp 0 and entropy 0, and receive no gradient.
    - Differentiable w.r.t. hidden, weight and bias for ANY upstream gradient (CE, DPO, GRPO ratios, weighted CE):
      the per-token gradient is applied before any reduction over tokens.
    - The entropy is differentiable only with `entropy_grad=True` (most objectives use it as a statistic).
    - Output dtype: the fused paths return fp32 for low-precision inputs (log-probs feed differences and ratios);
      the reference returns the input dtype, as naive code would (docs/kernels.md).
    """

    def __call__(
        self,
        hidden: Tensor,
        weight: Tensor,
        targets: Tensor,
        *,
        bias: Tensor | None = None,
        temperature: float = 1.0,
        ignore_index: int = IGNORE_INDEX,
        with_entropy: bool = False,
        entropy_grad: bool = False,
    ) -> Tensor | tuple[Tensor, Tensor]: ...


F = TypeVar("F", bound=Callable[..., object])


def implements(fn: F) -> F:
    """Register `fn` as a `TokenLogprobsFn`: check at import that it takes the contract's arguments, in order,
    with the same kinds and defaults; any further arguments must be keyword-only with a default. Returns `fn`
    unchanged."""
    params = list(inspect.signature(fn).parameters.values())
    head = [(p.name, p.kind, p.default) for p in params[: len(CONTRACT)]]
    want = [(name, kind, default) for name, (kind, default) in CONTRACT.items()]
    wrong = [f"#{i}: {_show(*got)} instead of {_show(*exp)}" for i, (got, exp) in enumerate(zip(head, want))
             if got != exp] + [f"#{i}: missing {_show(*exp)}" for i, exp in enumerate(want) if i >= len(head)]
    if wrong:
        raise TypeError(f"{fn.__module__}.{fn.__qualname__} does not match TokenLogprobsFn "
                        f"(src/kernels/signature.py): {'; '.join(wrong)}")
    extra = [p.name for p in params[len(CONTRACT):] if p.kind != _KW or p.default is inspect.Parameter.empty]
    if extra:
        raise TypeError(f"{fn.__module__}.{fn.__qualname__}: arguments beyond TokenLogprobsFn must be keyword-only "
                        f"with a default, got {extra}")
    return fn


def _show(name: str, kind: object, default: object) -> str:
    """`name`, `*, name=default` or `name=default`: one argument as it reads in a signature."""
    star = "*, " if kind == _KW else ""
    return f"{star}{name}" + ("" if default is inspect.Parameter.empty else f"={default!r}")
