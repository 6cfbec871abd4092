"""Rich progress bar that counts toward `trainer.max_steps`.

Training reads an infinite resumable stream, so Lightning's stock bar has no total unless max_epochs is -1,
and even then it counts micro-batches against optimizer steps when gradients are accumulated.
"""

from __future__ import annotations

from lightning.pytorch.callbacks import RichProgressBar


class StepProgressBar(RichProgressBar):
    @property
    def total_train_batches(self) -> int | float:
        trainer = self.trainer
        total = trainer.num_training_batches
        if trainer.max_steps is not None and trainer.max_steps > 0:
            remaining = (trainer.max_steps - trainer.global_step) * trainer.accumulate_grad_batches
            total = min(total, remaining)
        return total

    def _get_train_description(self, current_epoch: int) -> str:
        # "Epoch 0/-2" means nothing for a step-based run on an infinite stream.
        return f"{'Training':{max(len(self.validation_description), 8)}}"
