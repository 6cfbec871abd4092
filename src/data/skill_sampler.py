"""`SkillSampler`: an infinite, resumable, DDP-split stream over a pool of skills whose mixture changes in training.

The stream follows `src/data/sampler.py`: global positions 0, 1, 2, ...; rank r of W takes positions
`start_sample + r + k*W`, so one optimizer step's `B*W` samples are a contiguous block and ranks never overlap.
Global position g becomes a dataset index through two uniforms `(u_g, v_g)` that depend only on `(seed, g)`:

    skill = first i with cumsum(p)[i] > u_g        idx = floor(v_g · n_skill)        -> offsets[skill] + idx

where `p` is the mixture *in force at position g*. The mixture is a schedule `[(from_position, weights), ...]`
rather than one mutable vector, for two reasons:
- Resume: the schedule is saved with the checkpoint, so a resumed run maps every position to the same sample as
  an uninterrupted one, including positions drawn before a change but trained after it (prefetch).
- Workers and DDP: indices are drawn in the main process (DataLoader workers only fetch items), so a change takes
  effect at the next position not yet drawn. `next_undrawn_position()` tells the caller where that is; Skill-It
  takes the max over ranks so every rank switches at the same global position.

Optional example-level pacing (curriculum / anti-curriculum by difficulty): with `order` (pool indices sorted
easiest first) the sample at position g, trained at step i = g // pacing_block, is `order[floor(v_g · n_avail)]`
with n_avail = ceil(H · i / M) clamped to [min_available, H]: the paper's pacing g(i) = i·H/M (H pool examples,
M = pacing_steps training steps).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from torch.utils.data import DistributedSampler

from src.data.errors import DataError

CHUNK = 1024  # uniforms are generated per chunk of positions: one RNG construction per 1024 samples


def check_weights(weights: Sequence[float], n_skills: int, where: str = "mixture") -> np.ndarray:
    """Normalised float64 weights `[k]`, or a DataError naming the problem."""
    w = np.asarray(weights, dtype=np.float64).reshape(-1)
    if w.shape[0] != n_skills:
        raise DataError(f"{where}: {w.shape[0]} weights for {n_skills} skills; give one weight per skill")
    if not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
        raise DataError(f"{where}: weights must be finite, >= 0 and not all 0, got {w.tolist()}")
    return w / w.sum()


class SkillSampler(DistributedSampler):
    def __init__(
        self,
        pool_sizes: Sequence[int],
        weights: Sequence[float],
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        start_sample: int = 0,
        schedule: Sequence[tuple[int, Sequence[float]]] | None = None,
        order: np.ndarray | None = None,
        pacing_block: int | None = None,
        pacing_steps: int | None = None,
        min_available: int = 1,
    ) -> None:
        if not pool_sizes or any(int(n) <= 0 for n in pool_sizes):
            raise DataError(f"every skill needs at least one training example, got pool sizes {list(pool_sizes)}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} not in [0, {world_size})")
        if start_sample < 0:  # any count works: rank r continues at start_sample + r (another world size included)
            raise DataError(f"start_sample={start_sample} must be >= 0")
        # deliberately no super().__init__ (see src/data/sampler.py): we only want the type
        self.sizes = np.asarray(pool_sizes, dtype=np.int64)  # [k]
        self.offsets = np.concatenate([[0], np.cumsum(self.sizes)[:-1]])  # [k]
        self.k = len(self.sizes)
        self.seed, self.rank = int(seed), int(rank)
        self.num_replicas = self.world_size = int(world_size)
        self.start_sample = int(start_sample)
        self.epoch = 0
        self.schedule: list[tuple[int, np.ndarray]] = []
        for pos, w in schedule or [(0, weights)]:
            self.schedule.append((int(pos), check_weights(w, self.k, f"mixture from position {pos}")))
        if self.schedule[0][0] != 0:
            self.schedule.insert(0, (0, check_weights(weights, self.k)))
        self.order = None if order is None else np.asarray(order, dtype=np.int64)
        if self.order is not None and (self.order.shape[0] != self.sizes.sum() or not pacing_block or not pacing_steps):
            raise DataError("a difficulty order must cover the whole pool and come with pacing_block/pacing_steps")
        self.pacing_block, self.pacing_steps, self.min_available = pacing_block, pacing_steps, int(min_available)
        self._next_g = self.start_sample + self.rank  # this rank's next global position

    def __len__(self) -> int:  # infinite: Lightning's has_len() catches TypeError
        raise TypeError("SkillSampler is infinite; train by trainer.max_steps")

    def set_epoch(self, epoch: int) -> None:
        """Ignored: the position in the global stream is the only clock."""

    # ---- mixture schedule ------------------------------------------------------------------------------
    def weights_at(self, position: int) -> np.ndarray:
        starts = [s for s, _ in self.schedule]
        return self.schedule[bisect.bisect_right(starts, position) - 1][1]

    @property
    def weights(self) -> np.ndarray:
        """The mixture the next undrawn sample will use."""
        return self.weights_at(self.next_undrawn_position())

    def next_undrawn_position(self) -> int:
        """First global position of the next block this rank has not drawn (same on every rank in lockstep)."""
        return self._next_g - self.rank

    def set_weights(self, weights: Sequence[float], from_position: int | None = None) -> int:
        """Use `weights` from global position `from_position` on (default: the next undrawn one). Returns it."""
        pos = self.next_undrawn_position() if from_position is None else int(from_position)
        if pos < self.next_undrawn_position():
            raise ValueError(f"position {pos} was already drawn (next undrawn: {self.next_undrawn_position()})")
        w = check_weights(weights, self.k)
        self.schedule = [(s, x) for s, x in self.schedule if s < pos] + [(pos, w)]
        return pos

    def schedule_state(self) -> list[tuple[int, list[float]]]:
        """Plain-python schedule for checkpoints (`torch.load(weights_only=True)` accepts it)."""
        return [(int(s), [float(x) for x in w]) for s, w in self.schedule]

    # ---- the stream ----------------------------------------------------------------------------------
    def _uniforms(self, chunk: int) -> np.ndarray:
        """`[CHUNK, 2]` uniforms for positions [chunk*CHUNK, (chunk+1)*CHUNK): a function of (seed, chunk) only."""
        return np.random.default_rng([self.seed, int(chunk), 0x5C1]).random((CHUNK, 2))

    def index_at(self, position: int, uniforms: np.ndarray | None = None) -> int:
        u, v = (self._uniforms(position // CHUNK) if uniforms is None else uniforms)[position % CHUNK]
        if self.order is not None:
            n = int(self.sizes.sum())
            avail = int(np.ceil(n * (position // self.pacing_block) / self.pacing_steps))  # g(i) = i·H/M
            avail = min(n, max(self.min_available, avail))
            return int(self.order[min(int(v * avail), avail - 1)])
        cdf = np.cumsum(self.weights_at(position))
        skill = min(int(np.searchsorted(cdf, u * cdf[-1], side="right")), self.k - 1)
        return int(self.offsets[skill] + min(int(v * self.sizes[skill]), self.sizes[skill] - 1))

    def global_indices(self, start: int, count: int) -> list[int]:
        """Dataset indices of global positions [start, start + count) under the current schedule."""
        return [self.index_at(g) for g in range(start, start + count)]

    def __iter__(self) -> Iterator[int]:
        self._next_g = self.start_sample + self.rank
        cached, uni = -1, None
        while True:
            g = self._next_g
            if g // CHUNK != cached:
                cached, uni = g // CHUNK, self._uniforms(g // CHUNK)
            idx = self.index_at(g, uni)
            self._next_g = g + self.world_size
            yield idx

    def skill_of(self, index: int) -> int:
        return int(np.searchsorted(self.offsets, index, side="right") - 1)

    def state(self) -> dict[str, Any]:
        return {"schedule": self.schedule_state()}


class MixtureControl:
    """What the curriculum callbacks (src/callbacks/skills/) call on a data module that samples by skill: set and
    read the mixture, and whether a checkpoint already gave it one. The host has `k`, `sampler` (a SkillSampler once
    its train loader exists, else None), `initial_weights` and `_schedule` (restored from a checkpoint, or None)."""

    k: int
    sampler: SkillSampler | None
    initial_weights: np.ndarray
    _schedule: list[tuple[int, list[float]]] | None

    def set_mixture(self, weights: Sequence[float], from_position: int | None = None) -> int:
        """New skill weights: for the next train loader if none exists yet, else from the next undrawn sample."""
        w = check_weights(weights, self.k)
        if self.sampler is None:
            self.initial_weights, self._schedule = w, None
            return 0
        return self.sampler.set_weights(w, from_position)

    def current_weights(self) -> np.ndarray:
        return self.sampler.weights if self.sampler is not None else self.initial_weights

    @property
    def restored(self) -> bool:
        """True when a checkpoint gave this module its mixture (callbacks must not reset it)."""
        return self._schedule is not None
