"""`RLSummary`: the numbers of an RL run (method=grpo) in metrics.json, next to RunArtifacts' loss summary.

RunArtifacts summarises losses; an RL run is judged by its reward, and D³S by the reward reached per
back-propagated token and per second. This callback keeps the last validation reward and the GRPO module's
counters (`train/*` metrics it logs each generation batch) and hands them to RunArtifacts (`summary_metrics`).
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback

COUNTERS = ("backprop_tokens", "generation_batches", "train_seconds")


class RLSummary(Callback):
    """metrics.json gets `val/reward` (last validation), `train/reward_last10` (mean train reward of the last 10
    generation batches), `val/reward_best`, and the final `train/backprop_tokens`, `train/generation_batches`,
    `train/train_seconds`."""

    def __init__(self) -> None:
        self.val: list[float] = []
        self.train: list[float] = []
        self.counters: dict[str, float] = {}

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        m = trainer.callback_metrics
        if "train/reward_mean" in m:
            self.train.append(float(m["train/reward_mean"]))
        for name in COUNTERS:
            if f"train/{name}" in m:
                self.counters[name] = float(m[f"train/{name}"])

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking and "val/reward" in trainer.callback_metrics:
            self.val.append(float(trainer.callback_metrics["val/reward"]))

    def state_dict(self) -> dict[str, Any]:
        return {"val": list(self.val), "train": list(self.train), "counters": dict(self.counters)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.val = list(state_dict.get("val", []))
        self.train = list(state_dict.get("train", []))
        self.counters = dict(state_dict.get("counters", {}))

    def summary_metrics(self) -> dict[str, float | None]:
        tail = self.train[-10:]
        out: dict[str, float | None] = {
            "val/reward": self.val[-1] if self.val else None,
            "val/reward_best": max(self.val) if self.val else None,
            "train/reward_first": self.train[0] if self.train else None,
            "train/reward_last10": sum(tail) / len(tail) if tail else None,
        }
        out.update({f"train/{k}": v for k, v in self.counters.items()})
        return out
