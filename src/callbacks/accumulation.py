"""Keep gradient-accumulation windows aligned with optimizer steps when a run resumes with another accumulation.

Resuming on half the devices with twice the accumulation (same global batch) is the usual way to continue a run
elsewhere. Lightning decides where a window ends from its restored micro-batch counter
(`batch_progress.current.ready % accumulate_grad_batches == 0`), and that counter was advanced by the *saving* run's
accumulation: a run saved after 3 steps of 1 micro-batch resumes at 3, so with accumulation 2 its first step is
taken after a single micro-batch (measured: global_step 3 -> 4 on the first resumed batch). That step sees half a
global batch and every later window straddles two of the original steps' samples. The data stream itself is
positioned by samples consumed (src/data/sampler.py), so moving the counter to the next multiple of the new
accumulation restores the original steps exactly (tests/test_invariants.py).
"""

from __future__ import annotations

import logging

import lightning.pytorch as pl

log = logging.getLogger(__name__)


class AccumulationAlignment(pl.Callback):
    """Added to every trainer by src/runtime/run.py; a no-op unless a resume changed `accumulate_grad_batches`."""

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        acc = int(trainer.accumulate_grad_batches)
        current = trainer.fit_loop.epoch_loop.batch_progress.current
        pad = -current.ready % acc
        if acc > 1 and pad:
            for name in ("ready", "started", "processed", "completed"):
                setattr(current, name, getattr(current, name) + pad)
            log.info("resumed with accumulate_grad_batches=%d: micro-batch counter moved by %d to a window start",
                     acc, pad)
