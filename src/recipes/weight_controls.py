"""The two controls of critical-token DPO's rejected-response weights: same amount of weight, no placement.

cDPO weights each rejected token's log-ratio by w_t = 1 − s_t < 1, so it pushes a rejected response less hard than
DPO does. Two explanations predict a gain: the weights sit on the critical tokens (the paper's claim), or the push
is simply smaller. The controls keep the push and take the placement away:

- `shuffled`: the response's own weights, permuted at random among its trained tokens (same multiset, same sum);
- `constant`: every trained token gets the response's mean weight (same sum, no token singled out).

Both leave the end token's weight (1) and tokens cut by `seq_len` (weight 0, they never reach the loss) in place,
so Σ_t w_t over the tokens the loss sees is exactly cDPO's.

Worked example: weights [0.9, 0.1, 0.5, 1.0] with 3 trained response tokens and the end token last: `constant`
gives [0.5, 0.5, 0.5, 1.0] (mean of 0.9, 0.1, 0.5); `shuffled` gives a permutation of the first three, e.g.
[0.1, 0.5, 0.9, 1.0]. Both sum to 2.5, as cDPO's do.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

CONTROLS = ("shuffled", "constant")


def control_weights(weights: Sequence[float], n_trained: int, mode: str, rng: random.Random) -> list[float]:
    """`weights` ([response tokens..., end token]) with the first `n_trained` response tokens' weights shuffled or
    replaced by their mean (module docstring); the end token and the cut tokens keep theirs."""
    if mode not in CONTROLS:
        raise ValueError(f"unknown weight control {mode!r}; choose one of {', '.join(CONTROLS)}")
    out = list(weights)
    m = max(0, min(n_trained, len(out) - 1))  # response tokens the loss sees (the end token is the last entry)
    head = out[:m]
    if mode == "shuffled":
        rng.shuffle(head)
    elif head:
        head = [sum(head) / m] * m
    out[:m] = head
    return out
