"""Causal-LM objective: pretraining and SFT through the per-token log-prob kernel.

The module never asks the backbone for logits: it takes hidden states [B, T, d] and the output weight [V, d]
and hands them to `src.kernels.token_logprobs`, so the fused path never holds [B·T, V] logits for the
backward. Whether a run is pretraining or SFT is decided by the data (SFT batches carry -100 on prompts).
The training loss is the token mean over the whole optimizer step (all micro-batches and ranks) by default:
src/models/token_normaliser.py.
"""

from __future__ import annotations

import logging
import pickle
import time
from collections.abc import Callable
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.fabric.utilities.seed import _collect_rng_states, _set_rng_states
from lightning.pytorch.strategies import DeepSpeedStrategy
from torch import nn
from torchmetrics import SumMetric

from src.kernels import token_logprobs
from src.losses.token_ce import token_cross_entropy
from src.models.token_normaliser import LOSS_NORMALIZATIONS, StepTokenNormaliser

log = logging.getLogger(__name__)

LOSS_IMPLS = ("fused", "reference")


class CausalLMModule(pl.LightningModule):
    """Next-token prediction on pre-shifted labels (docs/contracts.md)."""

    def __init__(
        self,
        backbone: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., torch.optim.lr_scheduler.LRScheduler] | None = None,
        loss_impl: str = "fused",
        kernel_impl: str = "auto",
        tokenizer: Any = None,
        compile: bool = False,
        loss_normalization: str = "step",
    ) -> None:
        super().__init__()
        if loss_impl not in LOSS_IMPLS:
            raise ValueError(f"method.loss_impl={loss_impl!r} is not one of {LOSS_IMPLS}")
        if loss_normalization not in LOSS_NORMALIZATIONS:
            raise ValueError(
                f"method.loss_normalization={loss_normalization!r} is not one of {LOSS_NORMALIZATIONS} (step: token "
                "mean over the whole optimizer step; micro_batch: mean of per-micro-batch token means)"
            )
        self.save_hyperparameters(ignore=["backbone", "optimizer", "scheduler", "tokenizer"])
        self.backbone = backbone
        if compile:
            # In place (nn.Module.compile): parameter names and checkpoints stay those of the eager model.
            self.backbone.compile()
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.tokenizer = tokenizer
        self.kernel = "reference" if loss_impl == "reference" else (None if kernel_impl == "auto" else kernel_impl)
        self.val_nll = SumMetric()
        self.val_tokens = SumMetric()
        self._last_tick: float | None = None
        self._normaliser: StepTokenNormaliser | None = None

    # ---- forward -------------------------------------------------------------------------------------
    def token_logprobs(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Per-token log π(labels) for a batch, [B, T]; 0 where labels == -100."""
        hidden = self.backbone(
            batch["input_ids"],
            attention_mask=batch.get("attention_mask"),
            position_ids=batch.get("position_ids"),
            segment_ids=batch.get("segment_ids"),
        )  # [B, T, d]
        labels = batch["labels"]  # [B, T]
        # Under DeepSpeed ZeRO-3 the output weight is partitioned again once backbone.forward returns. Reading it
        # here, inside the engine's forward (Lightning runs training/validation_step there), makes DeepSpeed gather
        # it and register it as an external parameter of the running module, which re-gathers it for the backward:
        # gradients are exact (tests/test_invariants.py: ZeRO-3, every weight partitioned, == DDP). Outside a step
        # (e.g. generation after fit) wrap calls in deepspeed.zero.GatheredParameters.
        # The loss is −Σ mask·logp / n: a multiple of the label mask, so the kernel may build the gradients in
        # its forward (grad_hint; exact for any loss, faster for this one).
        logp = token_logprobs(
            hidden.flatten(0, 1),
            self.backbone.output_weight,
            labels.flatten(),
            bias=self.backbone.output_bias,
            impl=self.kernel,
            grad_hint=(labels.flatten() != -100).float(),
        )  # [B*T]
        return logp.view_as(labels)

    def _loss(
        self, batch: dict[str, torch.Tensor], reduction: str = "mean"
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        logp = self.token_logprobs(batch)  # [B, T]
        return token_cross_entropy(logp.flatten(), batch["labels"].flatten(), reduction=reduction)

    # ---- steps ---------------------------------------------------------------------------------------
    def on_fit_start(self) -> None:
        self._normaliser = None
        if self.hparams.loss_normalization != "step":
            return
        if isinstance(self.trainer.strategy, DeepSpeedStrategy):
            log.info("DeepSpeed steps on its own gradient buffers: the training loss is the mean of per-micro-batch "
                     "token means (method.loss_normalization=micro_batch behaviour; docs/scaleout.md)")
            return
        self._normaliser = StepTokenNormaliser()

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> dict[str, torch.Tensor]:
        """Returns the objective as `loss`, plus this micro-batch's detached `nll_sum` and `n_tokens`, from which
        callbacks compute the step's exact token-mean loss whatever the normalisation."""
        if self._normaliser is None:
            objective, stats = self._loss(batch)
        else:
            nll_sum, stats = self._loss(batch, reduction="sum")
            objective = self._normaliser.micro_batch_loss(nll_sum, stats["n_tokens"], batch["labels"].numel())
        loss = stats["nll_sum"] / stats["n_tokens"].clamp(min=1)  # this micro-batch's token mean, for the logs
        n_in = batch["attention_mask"].sum() if "attention_mask" in batch else batch["input_ids"].numel()
        bsz = batch["input_ids"].shape[0]
        # sync_dist: under DDP the logged value is the mean over ranks, not rank 0's share of the batch.
        self.log("train/loss", loss, prog_bar=True, batch_size=bsz, sync_dist=True)
        self.log("train/ppl", torch.exp(loss.detach().clamp(max=30)), batch_size=bsz)
        self._log_throughput(int(n_in) * self.trainer.world_size, bsz)
        return {"loss": objective, **stats}

    def optimizer_step(self, epoch: int, batch_idx: int, optimizer: Any, optimizer_closure: Any = None) -> None:
        """With loss_normalization=step, rescale the window's gradients to the exact step token mean right after
        the last backward: inside the closure, so before on_before_optimizer_step hooks and gradient clipping."""
        normaliser = self._normaliser
        if normaliser is None or optimizer_closure is None:
            super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
            return

        def closure() -> Any:
            out = optimizer_closure()
            params = [p for p in self.parameters() if p.requires_grad]
            normaliser.finish_step(params, int(self.trainer.accumulate_grad_batches), int(self.trainer.world_size))
            return out

        super().optimizer_step(epoch, batch_idx, optimizer, closure)

    def _log_throughput(self, tokens: int, bsz: int) -> None:
        """Tokens/s over all ranks, from wall time between consecutive steps (data loading included)."""
        now = time.perf_counter()
        if self._last_tick is not None:
            rate = tokens / max(now - self._last_tick, 1e-9)
            self.log("train/tokens_per_s", rate, prog_bar=True, batch_size=bsz)
        self._last_tick = now

    def on_train_epoch_start(self) -> None:
        self._last_tick = None

    def on_validation_end(self) -> None:
        # Runs after every callback's on_validation_end (task evaluations included): the next interval would
        # count evaluation time as training time, so it is not measured.
        self._last_tick = None

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        _, stats = self._loss(batch)
        self.val_nll.update(stats["nll_sum"])
        self.val_tokens.update(stats["n_tokens"].float())

    def on_validation_epoch_end(self) -> None:
        # Token-weighted over the whole validation set and all ranks (SumMetric syncs), not a mean of means.
        nll, n = self.val_nll.compute(), self.val_tokens.compute()
        loss = nll / n.clamp(min=1)
        self.log("val/loss", loss, prog_bar=True, sync_dist=False)
        self.log("val/ppl", torch.exp(loss.clamp(max=30)))
        self.val_nll.reset()
        self.val_tokens.reset()

    # ---- sharding ------------------------------------------------------------------------------------
    def configure_model(self) -> None:
        """strategy=fsdp shards the backbone here, before optimizers exist (FSDP2Strategy.shard_backbone); every
        other strategy has no `shard_backbone` and this does nothing."""
        shard = getattr(self.trainer.strategy, "shard_backbone", None)
        if shard is not None:
            shard(self.backbone)

    # ---- optimisation --------------------------------------------------------------------------------
    def configure_optimizers(self) -> dict[str, Any]:
        """AdamW-style groups: weight decay on matrices only (norm gains and biases are not decayed)."""
        params = [p for p in self.parameters() if p.requires_grad]
        if not params:
            raise ValueError("the model has no trainable parameters (check model.lora / freezing settings)")
        decay = [p for p in params if p.ndim >= 2]
        no_decay = [p for p in params if p.ndim < 2]
        groups = [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]
        optimizer = self.optimizer_factory([g for g in groups if g["params"]])
        if self.scheduler_factory is None:
            return {"optimizer": optimizer}
        scheduler = self.scheduler_factory(optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # ---- exact resume --------------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Pickled to bytes: numpy's state holds an ndarray, which `torch.load(weights_only=True)` refuses.
        states = _collect_rng_states(include_cuda=torch.cuda.is_available())
        checkpoint["tokensmith_rng"] = pickle.dumps(states)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if "tokensmith_rng" in checkpoint:
            _set_rng_states(pickle.loads(checkpoint["tokensmith_rng"]))  # our own bytes, written above

