"""Resumable, DDP-safe, infinite sampling for step-based training.

The global sample stream is infinite: epoch `e` is a permutation of the dataset seeded by `(seed, e)` (or the
identity when `shuffle=False`), and global position `g` is element `g % N` of epoch `g // N`'s permutation.

Ranks take the stream round-robin: rank `r` of `W` yields global positions `start_sample + r + k*W`, k = 0, 1, ...
So the `B*W` samples of one optimizer step (micro-batch B per rank) are the contiguous block of the global stream
no matter how it is split across ranks, and the ranks' streams are disjoint and together cover it.

`start_sample` is a global count (samples consumed by all ranks together, any value): resuming with the count
saved at a checkpoint continues exactly where training stopped, also on another number of ranks. There is
deliberately no `__len__`, so Lightning treats the train loader as infinite and training length is
`trainer.max_steps`.

It subclasses `DistributedSampler` only so that Lightning does not wrap it in its own distributed sampler.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
from torch.utils.data import DistributedSampler


def epoch_permutation(n: int, seed: int, epoch: int, shuffle: bool = True) -> np.ndarray:
    """The order of epoch `epoch`: a permutation of range(n) that depends only on (seed, epoch)."""
    if not shuffle:
        return np.arange(n, dtype=np.int64)
    return np.random.default_rng([int(seed), int(epoch)]).permutation(n).astype(np.int64)


class InfiniteSampler(DistributedSampler):
    def __init__(
        self,
        dataset_len: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        start_sample: int = 0,
        shuffle: bool = True,
    ) -> None:
        if dataset_len <= 0:
            raise ValueError("cannot sample from an empty dataset")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} not in [0, {world_size})")
        if start_sample < 0:
            raise ValueError(f"start_sample must be >= 0, got {start_sample}")
        # deliberately no super().__init__: it needs a dataset and torch.distributed; we only want the type
        self.n = int(dataset_len)
        self.seed = int(seed)
        self.rank = int(rank)
        self.num_replicas = self.world_size = int(world_size)
        self.start_sample = int(start_sample)
        self.shuffle = shuffle
        self.epoch = 0

    def __len__(self) -> int:  # infinite: Lightning's has_len() catches TypeError
        raise TypeError("InfiniteSampler is infinite; train by trainer.max_steps")

    def set_epoch(self, epoch: int) -> None:
        """Ignored: the epoch is part of the global stream position, not of Lightning's epoch counter."""

    def global_indices(self, start: int, count: int) -> np.ndarray:
        """Dataset indices of global stream positions [start, start + count) (all ranks)."""
        out = np.empty(count, dtype=np.int64)
        g, filled = start, 0
        while filled < count:
            e, p = divmod(g, self.n)
            take = min(self.n - p, count - filled)
            out[filled : filled + take] = epoch_permutation(self.n, self.seed, e, self.shuffle)[p : p + take]
            filled += take
            g += take
        return out

    def __iter__(self) -> Iterator[int]:
        g = self.start_sample + self.rank  # this rank's next global position
        cached_epoch, perm = -1, None
        while True:
            e, p = divmod(g, self.n)
            if e != cached_epoch:
                cached_epoch, perm = e, epoch_permutation(self.n, self.seed, e, self.shuffle)
            yield int(perm[p])
            g += self.world_size


def samples_consumed_at(step: int, per_step: int, base: int = 0, base_step: int | None = None) -> int:
    """Global samples consumed after optimizer step `step`: the restored position `base` (recorded at `base_step`)
    plus the steps since, each `per_step` = batch x accumulation x world samples.

    Pricing only the steps since the resume at the current global batch keeps the position exact when a run
    resumes with another batch size, accumulation or world size (step x per_step would re-price the steps taken
    before the resume and skip or repeat samples at the next resume). A checkpoint without `base_step` (older
    ones) is assumed to have had the current global batch.
    """
    if base_step is None:
        base_step = base // per_step if per_step else 0
    return int(base) + (int(step) - int(base_step)) * int(per_step)


def position_state(consumed: int, trainer: Any) -> dict[str, Any]:
    """A datamodule's checkpoint state for its data position: samples consumed and the step they were counted at."""
    return {"samples_consumed": int(consumed), "global_step": getattr(trainer, "global_step", None)}


def restore_position(state: dict[str, Any]) -> tuple[int, int | None]:
    """(samples consumed, step recorded at or None for older checkpoints) from `position_state`'s dict."""
    step = state.get("global_step")
    return int(state.get("samples_consumed", 0)), None if step is None else int(step)
