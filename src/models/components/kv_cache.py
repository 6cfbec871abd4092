"""The compact transformer's KV cache: per layer, the keys and values of every token seen so far.

Kept deliberately simple (concatenate per step, no preallocation): generation here serves research loops
(GRPO rollouts, evals) on small models, where clarity beats the last few percent of speed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor


@dataclass
class KVCache:
    layers: list[tuple[Tensor, Tensor]] = field(default_factory=list)  # per layer: k, v [B, Hkv, S, hd]

    @property
    def seq_len(self) -> int:
        return self.layers[0][0].shape[2] if self.layers else 0
