"""`DocumentsSeen`: how many training documents (problems) the model has seen, logged as `train/docs_seen`.

Models trained on differently tokenized streams cannot be compared at equal optimizer steps: StochasTok packs the
deterministic stream into shorter rows so that their expansion fits (src/data/stochastok.py), so a step at p = 0.3
holds about three quarters of the problems a deterministic step holds. Compared at equal steps, "learns slower" is
partly "has seen fewer problems". `python -m src.report <dir> --x train/docs_seen` plots any logged metric against
this count instead (docs/stochastok.md).

A document counts when its end token is a training target (`labels == eos`), summed over every micro-batch and
every rank. It is logged every `trainer.log_every_n_steps` optimizer steps and at the end of every validation (so
validation-time task metrics have an x value at their own step), kept in checkpoints (a resumed run counts on),
and written to metrics.json as the final count.
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback

KEY = "train/docs_seen"


class DocumentsSeen(Callback):
    def __init__(self) -> None:
        self.count = 0
        self._eos: int | None = None
        self._logged_step = -1

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        tok = getattr(trainer.datamodule, "tokenizer", None)
        if tok is None or getattr(tok, "eos_id", None) is None:
            raise ValueError("callbacks.docs_seen counts end tokens and needs a data module with a tokenizer that has "
                             "an eos_id; remove the callback for this data")
        self._eos = int(tok.eos_id)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        n = (batch["labels"] == self._eos).sum()  # [] this micro-batch's finished documents
        self.count += int(trainer.strategy.reduce(n.to(torch.long), reduce_op="sum"))
        step = trainer.global_step
        if step % max(1, trainer.log_every_n_steps) == 0:
            self._log(trainer)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._log(trainer)

    def _log(self, trainer: pl.Trainer) -> None:
        step = trainer.global_step
        if step == self._logged_step:
            return
        self._logged_step = step
        for lg in trainer.loggers:
            lg.log_metrics({KEY: float(self.count)}, step=step)

    def state_dict(self) -> dict[str, Any]:
        return {"count": self.count}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.count = int(state_dict["count"])

    def summary_metrics(self) -> dict[str, float]:
        """Merged into metrics.json by RunArtifacts."""
        return {KEY: float(self.count)}
