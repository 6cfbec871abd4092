"""Learning-rate schedules, built as `_partial_` configs so the module binds the optimizer."""

from __future__ import annotations

import math

import torch
from torch.optim.lr_scheduler import LambdaLR


def warmup_cosine_factor(step: int, warmup_steps: int, total_steps: int, min_lr_ratio: float) -> float:
    """Multiplier on the base lr: linear warmup from ~0, then cosine decay to `min_lr_ratio`."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    decay_steps = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def warmup_cosine(
    optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int, min_lr_ratio: float = 0.1
) -> LambdaLR:
    """Linear warmup then cosine decay, stepped once per optimizer step."""
    if total_steps <= 0:
        raise ValueError(f"scheduler total_steps must be > 0 (got {total_steps}); set trainer.max_steps")
    if not 0.0 <= min_lr_ratio <= 1.0:
        raise ValueError(f"scheduler min_lr_ratio must be in [0, 1] (got {min_lr_ratio})")
    return LambdaLR(
        optimizer, lambda s: warmup_cosine_factor(s, warmup_steps, total_steps, min_lr_ratio)
    )
