"""Where a data module's infinite train stream stands, for checkpoints: one implementation for every module.

A module's train sampler starts at a global sample count (src/data/sampler.py). The count at a checkpoint is the
restored position plus the optimizer steps since, each `accumulate_grad_batches * batch_size * world_size`
samples; checkpoints are taken at optimizer-step boundaries, so that is exact. The checkpoint part written here is
`{"samples_consumed", "global_step"}` (`position_state`); each module adds only its own identity keys (what the
position indexes) to its `state_dict`, and reads them back in its `load_state_dict` next to `restore_position`.
"""

from __future__ import annotations

from typing import Any

from src.data.sampler import position_state, restore_position, samples_consumed_at


class StreamPosition:
    """Mixin for a `LightningDataModule` with an integer `batch_size` and an infinite, position-resumable sampler.

    `_samples_consumed` / `_consumed_step` are where the next train loader starts and the global step that
    position was recorded at (None: an older checkpoint without it).
    """

    batch_size: int
    _samples_consumed: int = 0
    _consumed_step: int | None = 0

    def _rank_world(self) -> tuple[int, int]:
        """(global rank, world size) of the attached trainer; (0, 1) without one."""
        trainer = getattr(self, "trainer", None)
        return (0, 1) if trainer is None else (int(trainer.global_rank), int(trainer.world_size))

    def samples_consumed(self) -> int:
        """Global samples consumed so far (all ranks); checkpoints are taken at optimizer-step boundaries."""
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return self._samples_consumed
        per_step = int(trainer.accumulate_grad_batches) * self.batch_size * int(trainer.world_size)
        # An objective that takes several optimizer updates per batch (GRPO's PPO epochs) says how many; the
        # checkpoints of such a run fall between batches, so the division is exact.
        module = getattr(trainer, "lightning_module", None)  # None before fit, or for a stand-in trainer
        updates = int(getattr(module, "optimizer_steps_per_batch", 1) or 1)
        if updates > 1 and self._consumed_step is not None:
            return self._samples_consumed + (int(trainer.global_step) - self._consumed_step) // updates * per_step
        return samples_consumed_at(int(trainer.global_step), per_step, self._samples_consumed, self._consumed_step)

    def position_state(self) -> dict[str, Any]:
        """The position part of `state_dict()`: `{"samples_consumed", "global_step"}`."""
        return position_state(self.samples_consumed(), getattr(self, "trainer", None))

    def restore_position(self, state_dict: dict[str, Any]) -> None:
        """Read the position part of a checkpoint's state; the next train loader starts there."""
        self._samples_consumed, self._consumed_step = restore_position(state_dict)
