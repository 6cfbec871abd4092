"""Example-level (anti-)curriculum: the pool ordered by a reference model's answer loss, easiest (hardest) first."""

from __future__ import annotations

import copy
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch

from src.callbacks.skills.evaluation import DIFFICULTY_ON_PROMPTS, SkillEvalCallback
from src.data.errors import DataError
from src.models.logprobs import batch_logprobs


class DifficultyCurriculumCallback(SkillEvalCallback):
    """Example-level (anti-)curriculum: pool sorted by a reference model's answer loss, paced g(i) = i·H/M.

    reference_ckpt: a Lightning checkpoint of the same architecture (e.g. a stratified run's last.ckpt).
    The order is recomputed at every fit start (deterministic), so resume needs no extra state.
    """

    def __init__(self, reference_ckpt: str | None = None, reverse: bool = False, eval_every: int = 100) -> None:
        super().__init__(eval_every)
        self.reference_ckpt, self.reverse = reference_ckpt, bool(reverse)

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        dm = self._datamodule(trainer)
        if "loss" not in getattr(dm, "skill_signals", ("loss",)):
            raise DataError(DIFFICULTY_ON_PROMPTS)
        if not self.reference_ckpt or not Path(self.reference_ckpt).is_file():
            raise DataError(
                f"curriculum by difficulty needs a reference model checkpoint, got {self.reference_ckpt!r}; train "
                "one (e.g. curriculum=stratified) and pass "
                "curriculum.callback.reference_ckpt=<run>/checkpoints/last.ckpt"
            )
        ref = copy.deepcopy(pl_module.backbone)
        # weights_only: our checkpoints hold tensors and plain types only (the RNG states as bytes, src/models/lm.py;
        # the sampler's schedule as lists, src/data/skill_sampler.py), so loading one runs no pickled code.
        state = torch.load(self.reference_ckpt, map_location=pl_module.device, weights_only=True)["state_dict"]
        ref.load_state_dict({k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.")})
        ref.eval()
        dm.setup("fit")
        loader = torch.utils.data.DataLoader(dm.train_dataset.answers_only(), batch_size=256, shuffle=False,
                                             collate_fn=dm.val_dataloader().collate_fn,
                                             generator=torch.Generator().manual_seed(0))  # global RNG untouched
        losses = []
        with torch.no_grad():
            for batch in loader:
                batch = {k: v.to(pl_module.device) for k, v in batch.items()}
                logp = batch_logprobs(ref, batch).logp  # [B, T], 0 off the answer, in the model's dtype
                losses.append(-logp.sum(-1).cpu())  # one answer per row
        difficulty = torch.cat(losses).numpy()  # [N]
        order = np.argsort(-difficulty if self.reverse else difficulty, kind="stable")
        per_step = int(trainer.accumulate_grad_batches) * dm.batch_size * trainer.world_size
        dm.set_difficulty_order(order, per_step, int(trainer.max_steps))
        del ref
        super().on_fit_start(trainer, pl_module)
