"""Skill-level (anti-)curriculum: train on the easiest (hardest) skills first, adding skills round by round."""

from __future__ import annotations

import math
from typing import Any

import lightning.pytorch as pl
import numpy as np

from src.callbacks.skills.evaluation import SkillEvalCallback


class SkillCurriculumCallback(SkillEvalCallback):
    """Skill (anti-)curriculum: round t trains uniformly on the ceil(t·k/T) easiest (hardest) skills by current loss."""

    def __init__(self, rounds: int = 5, eval_every: int = 100, reverse: bool = False, signal: str = "auto",
                 reward_max: float | str = "auto") -> None:
        super().__init__(eval_every, signal=signal, reward_max=reward_max)
        self.rounds, self.reverse, self.round = int(rounds), bool(reverse), 0

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "round": self.round}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self.round = int(state_dict["round"])

    def update(self, trainer: pl.Trainer, pl_module: pl.LightningModule, dm: Any, step: int) -> None:
        if self.round >= self.rounds or step < self.round * trainer.max_steps // self.rounds or not self.evals:
            return
        self.round += 1
        loss = np.asarray(self.evals[-1]["loss"])
        order = np.argsort(-loss if self.reverse else loss, kind="stable")
        active = order[: math.ceil(self.round * dm.k / self.rounds)]
        w = np.zeros(dm.k)
        w[active] = 1.0
        self._set_mixture_everywhere(trainer, dm, w, step)
