"""`Objective`: the LightningModule base every training objective builds on (causal LM, DPO, GRPO, diffusion).

It holds everything that does not depend on the loss, so an objective implements only `compute_loss` (and, where it
can, `sample`):
- optimizer groups (weight decay on matrices only) and the step-interval scheduler, both `_partial_` configs;
- `configure_model`: the strategy shards the backbone (FSDP2) before optimizers exist;
- `compile`: torch.compile of the backbone in place (checkpoint keys unchanged);
- exact resume: the RNG states of python/numpy/torch travel in the checkpoint;
- throughput logging (tokens/s over all ranks, evaluation time excluded);
- the loss normalisation: an objective's loss is a ratio numerator / denominator (NLL sum / label tokens, pair
  losses / pairs, ...). With `loss_normalization=step` the trained loss is Σ numerator / Σ denominator over the
  whole optimizer step, all micro-batches and ranks (src/models/token_normaliser.py); with `micro_batch` it is
  the mean of per-micro-batch ratios.
- validation: Σ numerator / Σ denominator over the whole validation set and all ranks, logged as `val/loss`;
- a non-finite loss (`method.nonfinite`): `stop` ends the run before that update is applied (so no checkpoint
  holds it), `skip` drops the step's update, counts it (`train/skipped_steps`) and goes on.

The step's result goes to callbacks as a typed `StepOutput` (under `outputs["step"]` in `on_train_batch_end`),
never as a dict of magic keys: `RunArtifacts` records the exact step loss of any objective from it.
"""

from __future__ import annotations

import abc
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.fabric.utilities.seed import _collect_rng_states, _set_rng_states
from lightning.pytorch.strategies import DDPStrategy, DeepSpeedStrategy, SingleDeviceStrategy
from torch import nn
from torchmetrics import SumMetric

from src.models.components.generation import generate
from src.models.master_weights import MasterWeights
from src.models.reference import ReferenceMismatchError, ReferenceModel, weights_fingerprint
from src.models.token_normaliser import LOSS_NORMALIZATIONS, StepTokenNormaliser

log = logging.getLogger(__name__)

STEP_OUTPUT_KEY = "step"  # where training_step's StepOutput sits in Lightning's `outputs` dict
NONFINITE_POLICIES = ("stop", "skip")


class OptimizerConfigError(ValueError):
    """The optimizer or scheduler refused its settings (a negative learning rate, betas outside [0, 1), ...)."""


class NonFiniteLossError(RuntimeError):
    """The training loss was NaN or infinite and `method.nonfinite=stop`: the run ends before that update."""


class _NonFiniteStep(Exception):  # noqa: N818 (control flow inside optimizer.step, never escapes optimizer_step)
    pass


@dataclass
class StepOutput:
    """One micro-batch's loss, as a ratio whose parts sum exactly over micro-batches and ranks.

    numerator:   scalar, differentiable: the summed per-unit loss (NLL summed over label tokens, DPO loss summed
                 over pairs, ...).
    denominator: scalar count of units (label tokens, pairs, sequences); detached.
    capacity:    the most units a micro-batch of this shape could hold (label positions, B·T): only used to pick
                 the step normaliser's constant scale, never changes the weighting.
    metrics:     detached scalars logged as `train/<name>` and `val/<name>` (the mean over batches).
    """

    numerator: torch.Tensor
    denominator: torch.Tensor
    capacity: int
    metrics: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def loss(self) -> torch.Tensor:
        """This micro-batch's mean loss (differentiable); 0 when it holds no unit."""
        return self.numerator / self.denominator.clamp(min=1)

    def detached(self) -> StepOutput:
        return StepOutput(self.numerator.detach(), self.denominator.detach(), self.capacity,
                          {k: v.detach() for k, v in self.metrics.items()})

    @staticmethod
    def of(outputs: Any) -> StepOutput | None:
        """The StepOutput inside a training step's `outputs` (as callbacks receive it), or None (skipped step,
        or a module not built on `Objective`)."""
        out = outputs.get(STEP_OUTPUT_KEY) if isinstance(outputs, Mapping) else None
        return out if isinstance(out, StepOutput) else None


class Objective(pl.LightningModule, abc.ABC):
    """Base of every objective. Subclasses implement `compute_loss(batch)`, and `sample_ids` when their model is
    not a causal LM (the default decodes autoregressively).

    Class attributes a subclass may set:
    - `reports_perplexity`: log `train/ppl` and `val/ppl` = exp(loss) (token-level NLL objectives).
    - `data_formats`: the `data.format`s it can train on (None: any), with `data_hint`, what those are and a data
      config that gives one; a run on another format stops before any data is built (src/runtime/build.py).
    """

    reports_perplexity = False
    data_formats: tuple[str, ...] | None = None
    data_hint = ""

    def __init__(
        self,
        backbone: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., torch.optim.lr_scheduler.LRScheduler] | None = None,
        kernel_impl: str = "auto",
        tokenizer: Any = None,
        compile: bool = False,
        loss_normalization: str = "step",
        nonfinite: str = "stop",
    ) -> None:
        super().__init__()
        if nonfinite not in NONFINITE_POLICIES:
            raise ValueError(f"method.nonfinite={nonfinite!r} is not one of {NONFINITE_POLICIES} (stop: end the run "
                             "at the first non-finite loss; skip: drop that step's update and go on)")
        if loss_normalization not in LOSS_NORMALIZATIONS:
            raise ValueError(
                f"method.loss_normalization={loss_normalization!r} is not one of {LOSS_NORMALIZATIONS} (step: "
                "loss mean over the whole optimizer step; micro_batch: mean of per-micro-batch means)"
            )
        # Collects the subclass's __init__ arguments too (Lightning walks the __init__ frames).
        self.save_hyperparameters(ignore=["backbone", "optimizer", "scheduler", "tokenizer"])
        self.backbone = backbone
        if compile:
            # In place (nn.Module.compile): parameter names and checkpoints stay those of the eager model.
            self.backbone.compile()
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.tokenizer = tokenizer
        self.kernel: str | None = None if kernel_impl == "auto" else kernel_impl
        self.loss_normalization = loss_normalization
        self.val_numerator = SumMetric()
        self.val_denominator = SumMetric()
        self.nonfinite = nonfinite
        self.skipped_steps = 0  # optimizer steps dropped for a non-finite loss (nonfinite=skip); checkpointed
        self._reference_prints: dict[str, str] = {}  # {prefix: fingerprint} of frozen reference copies, hashed once
        self._last_tick: float | None = None
        self._normaliser: StepTokenNormaliser | None = None
        self._window_nonfinite: torch.Tensor | None = None  # on the device: no host sync per micro-batch

    # ---- what an objective implements ------------------------------------------------------------------
    @abc.abstractmethod
    def compute_loss(self, batch: dict[str, torch.Tensor]) -> StepOutput:
        """The micro-batch's loss as numerator / denominator (see StepOutput). Used for training and validation;
        `self.training` tells them apart."""

    @torch.no_grad()
    def sample_ids(self, prompt_ids: list[list[int]], max_new_tokens: int = 48,
                   temperature: float = 0.0) -> list[list[int]] | None:
        """New token ids after each (already tokenized) prompt; None when the model cannot continue a prompt.

        The default is KV-cached autoregressive decoding (greedy at temperature 0) of left-padded prompts, for
        every objective whose policy is a causal LM (LM, SFT, DPO, GRPO); rows are `max_new_tokens` long, padded
        after the end token. A bidirectional model gets None here; its objective overrides this with its own
        sampler. The caller puts the module in eval mode.
        """
        tok = self.tokenizer
        if tok is None or not getattr(self.backbone, "causal", True):
            return None
        width = max(len(e) for e in prompt_ids)
        ids = torch.full((len(prompt_ids), width), tok.pad_id, dtype=torch.long)  # [B, T]
        mask = torch.zeros_like(ids)  # [B, T]
        for i, e in enumerate(prompt_ids):  # left padding
            ids[i, width - len(e):] = torch.tensor(e)
            mask[i, width - len(e):] = 1
        new = generate(
            self.backbone, ids.to(self.device), mask.to(self.device), max_new_tokens=max_new_tokens,
            temperature=temperature, stop_token_ids=(tok.eos_id,), pad_token_id=tok.pad_id,
        )  # [B, max_new_tokens]
        return new.tolist()

    def sample(self, prompts: list[str], max_new_tokens: int = 48, temperature: float = 0.0) -> list[str] | None:
        """Text continuations of text prompts (samples.txt), decoded without special tokens; None when the
        objective cannot sample or has no tokenizer."""
        tok = self.tokenizer
        if tok is None:
            return None
        new = self.sample_ids([tok.encode(p) or [tok.eos_id] for p in prompts], max_new_tokens, temperature)
        if new is None:
            return None
        special = set(tok.special_ids)
        return [tok.decode([t for t in row if t not in special]) for row in new]

    @property
    def optimizer_steps_per_batch(self) -> int:
        """Optimizer updates per data batch (1; a rollout objective takes `ppo_epochs`): the data stream's position
        and the curricula's evaluation steps read it."""
        return 1

    def input_tokens(self, batch: dict[str, torch.Tensor]) -> int:
        """Tokens this micro-batch feeds the model (for tokens/s): real tokens when the batch has a mask."""
        return int(batch["attention_mask"].sum()) if "attention_mask" in batch else int(batch["input_ids"].numel())

    @staticmethod
    def batch_size_of(batch: dict[str, torch.Tensor]) -> int:
        """Rows of the batch (for Lightning's epoch-level averaging of logged values)."""
        first = batch["input_ids"] if "input_ids" in batch else next(iter(batch.values()))
        return int(first.shape[0])

    # ---- training ----------------------------------------------------------------------------------------
    def on_fit_start(self) -> None:
        self._normaliser, self._window_nonfinite = None, None
        if self.nonfinite == "skip" and isinstance(self.trainer.strategy, DeepSpeedStrategy):
            raise ValueError("method.nonfinite=skip cannot drop a step under DeepSpeed (the engine steps itself); use "
                             "method.nonfinite=stop, or DeepSpeed's own fp16 loss scaling, which skips overflows")
        if self.loss_normalization != "step":
            return
        if isinstance(self.trainer.strategy, DeepSpeedStrategy):
            log.info("DeepSpeed steps on its own gradient buffers: the training loss is the mean of per-micro-batch "
                     "means (method.loss_normalization=micro_batch behaviour; docs/scaleout.md)")
            return
        self._normaliser = StepTokenNormaliser()

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> dict[str, Any]:
        """Returns the objective as `loss` (scaled for the backward) and the detached StepOutput, from which
        callbacks compute the step's exact loss whatever the normalisation."""
        out = self.compute_loss(batch)
        bad = ~torch.isfinite(out.numerator.detach())
        self._window_nonfinite = bad if self._window_nonfinite is None else self._window_nonfinite | bad
        if self._normaliser is None:
            objective = out.loss
        else:
            objective = self._normaliser.micro_batch_loss(out.numerator, out.denominator, out.capacity)
        out = out.detached()
        loss = out.loss  # this micro-batch's mean, for the logs
        bsz = self.batch_size_of(batch)
        # sync_dist: under DDP the logged value is the mean over ranks, not rank 0's share of the batch.
        self.log("train/loss", loss, prog_bar=True, batch_size=bsz, sync_dist=True)
        if self.reports_perplexity:
            self.log("train/ppl", torch.exp(loss.clamp(max=30)), batch_size=bsz)
        for name, value in out.metrics.items():
            self.log(f"train/{name}", value, batch_size=bsz, sync_dist=True)
        self._log_throughput(self.input_tokens(batch) * self.trainer.world_size, bsz)
        return {"loss": objective, STEP_OUTPUT_KEY: out}

    def optimizer_step(self, epoch: int, batch_idx: int, optimizer: Any, optimizer_closure: Any = None) -> None:
        """Right after the window's last backward (inside the closure, so before on_before_optimizer_step hooks and
        gradient clipping): drop or stop on a non-finite loss (`method.nonfinite`), then, with
        loss_normalization=step, rescale the gradients to the exact step mean."""
        if optimizer_closure is None:
            super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
            return

        def closure() -> Any:
            out = optimizer_closure()
            if self._step_is_nonfinite():
                raise _NonFiniteStep
            if self._normaliser is not None:
                params = [p for p in self.parameters() if p.requires_grad]
                self._normaliser.finish_step(params, int(self.trainer.accumulate_grad_batches),
                                             int(self.trainer.world_size))
            return out

        try:
            super().optimizer_step(epoch, batch_idx, optimizer, closure)
        except _NonFiniteStep:
            if self._normaliser is not None:
                self._normaliser.local_tokens = None
            self.on_nonfinite_step(optimizer)
        if self.nonfinite == "skip":
            self.log("train/skipped_steps", float(self.skipped_steps), batch_size=1)

    def on_nonfinite_step(self, optimizer: Any) -> None:
        """The non-finite policy of every objective, automatic or manual optimisation (src/models/rollout.py):
        drop the update's gradients, then stop the run (`nonfinite=stop`) or count the skipped step and go on."""
        optimizer.zero_grad(set_to_none=True)  # the update's gradients hold the non-finite values
        step = int(self.trainer.global_step) + 1  # the step being taken (1-based, as logged)
        if self.nonfinite == "stop":
            raise NonFiniteLossError(
                f"the training loss is not finite at optimizer step {step}; the run stops before applying that "
                "update, so the newest checkpoint is the last good one. Lower the learning rate, check the data "
                "(the step's batches), or set method.nonfinite=skip to drop such steps and go on"
            ) from None
        self.skipped_steps += 1
        log.warning("optimizer step %d skipped: non-finite loss (%d skipped so far, method.nonfinite=skip)",
                    step, self.skipped_steps)

    def _step_is_nonfinite(self) -> bool:
        """Did any micro-batch of this window, on any rank, have a non-finite loss? One host sync per step."""
        flag = self._window_nonfinite
        self._window_nonfinite = None
        bad = torch.zeros((), device=self.device) if flag is None else flag.float()
        if self.trainer.world_size > 1:
            bad = self.trainer.strategy.reduce(bad, reduce_op="sum")
        return bool(bad > 0)

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

    # ---- validation --------------------------------------------------------------------------------------
    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        out = self.compute_loss(batch).detached()
        self.val_numerator.update(out.numerator)
        self.val_denominator.update(out.denominator.float())
        for name, value in out.metrics.items():
            self.log(f"val/{name}", value, batch_size=self.batch_size_of(batch), sync_dist=True)

    def on_validation_epoch_end(self) -> None:
        # Weighted over the whole validation set and all ranks (SumMetric syncs), not a mean of means.
        num, den = self.val_numerator.compute(), self.val_denominator.compute()
        loss = num / den.clamp(min=1)
        self.log("val/loss", loss, prog_bar=True, sync_dist=False)
        if self.reports_perplexity:
            self.log("val/ppl", torch.exp(loss.clamp(max=30)))
        self.val_numerator.reset()
        self.val_denominator.reset()

    # ---- sharding ----------------------------------------------------------------------------------------
    def configure_model(self) -> None:
        """strategy=fsdp shards the backbone here, before optimizers exist (FSDP2Strategy.shard_backbone), and
        any frozen reference model the same way; every other strategy has no `shard_backbone`. Without a trainer
        (`load_from_checkpoint` calls this hook too) there is nothing to shard."""
        if self._trainer is None:
            return
        shard = getattr(self.trainer.strategy, "shard_backbone", None)
        if shard is not None:
            shard(self.backbone)
            for ref in self.reference_models():
                shard(ref)

    def load_backbone_weights(self, state: Mapping[str, torch.Tensor]) -> None:
        """Start training from `state` (a recipe stage's starting point, a fine-tune's pretrained weights): the
        policy loads it, and so does every frozen reference copy, which was taken when the objective was built
        (from the initialisation) and must be "the starting policy" (src/models/reference.py). A backbone with
        `load_base_state_dict` (the compact transformer: plain weights under its LoRA adapters) loads it that way."""
        for model in (self.backbone, *self.reference_models()):
            getattr(model, "load_base_state_dict", model.load_state_dict)(state)
        self._reference_prints.clear()

    def reference_models(self) -> list[nn.Module]:
        """Frozen models this objective holds besides the backbone (a `ReferenceModel` in `copy` mode,
        src/models/reference.py), to be sharded like the policy."""
        return [m.module for m in self.children() if isinstance(m, ReferenceModel) and m.module is not None]

    # ---- optimisation ------------------------------------------------------------------------------------
    def configure_optimizers(self) -> dict[str, Any]:
        """AdamW-style groups: weight decay on matrices only (norm gains and biases are not decayed)."""
        params = [p for p in self.parameters() if p.requires_grad]
        if not params:
            raise ValueError("the model has no trainable parameters (check model.lora / freezing settings)")
        decay = [p for p in params if p.ndim >= 2]
        no_decay = [p for p in params if p.ndim < 2]
        groups = [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]
        try:
            optimizer = self.optimizer_factory([g for g in groups if g["params"]])
        except ValueError as err:  # torch validates lr, betas, eps, weight_decay here, before any step
            raise OptimizerConfigError(f"method.optimizer refused its settings: {err}; fix that key of "
                                       "method.optimizer (lr, betas, eps, weight_decay, ...)") from None
        low = sum(p.numel() for p in params if p.dtype in (torch.bfloat16, torch.float16))
        deepspeed = self._trainer is not None and isinstance(self.trainer.strategy, DeepSpeedStrategy)
        if isinstance(optimizer, MasterWeights):
            if deepspeed:
                raise OptimizerConfigError("master_weight_adamw does not go with DeepSpeed, which keeps fp32 master "
                                           "weights itself under trainer.precision=bf16-mixed: set "
                                           "method.optimizer._target_=torch.optim.AdamW")
            if not low:
                log.warning("method.optimizer keeps fp32 master weights, but every trainable parameter is already "
                            "fp32: 4 more bytes per parameter for nothing. They are meant for "
                            "trainer.precision=bf16-true (FSDP2's param_dtype=bf16 keeps fp32 parameters itself).")
        elif low and not deepspeed:  # DeepSpeed keeps fp32 masters
            log.warning("%.1fM trainable parameters are %s and %s steps them directly: updates smaller than ~1/256 "
                        "of a weight round away. With trainer.precision=bf16-true set method.optimizer._target_="
                        "src.models.master_weights.master_weight_adamw (fp32 master weights, docs/models.md).",
                        low / 1e6, next(p.dtype for p in params if p.dtype in (torch.bfloat16, torch.float16)),
                        type(optimizer).__name__)
        if self.scheduler_factory is None:
            return {"optimizer": optimizer}
        try:
            scheduler = self.scheduler_factory(optimizer)
        except ValueError as err:
            raise OptimizerConfigError(f"method.scheduler refused its settings: {err}; fix method.scheduler.*") \
                from None
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # ---- exact resume ----------------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[RNG_KEY] = rng_state_to_checkpoint(_collect_rng_states(include_cuda=torch.cuda.is_available()))
        checkpoint["tokensmith_skipped_steps"] = self.skipped_steps
        self._drop_rebuildable_references(checkpoint)

    def _copied_references(self) -> dict[str, nn.Module]:
        """{state-dict prefix: frozen copy} of the `copy`-mode references this objective holds."""
        return {f"{name}.frozen.": m.frozen for name, m in self.named_children()
                if isinstance(m, ReferenceModel) and m.frozen is not None}

    def _drop_rebuildable_references(self, checkpoint: dict[str, Any]) -> None:
        """A frozen reference copy is the run's starting weights, which a resume rebuilds: the checkpoint keeps its
        fingerprint instead of its weights (for SmolLM2 DPO, ~0.5 GB less per checkpoint). Only for full-state
        checkpoints (one device, DDP); sharded ones (FSDP2, DeepSpeed) are written by their engines, unchanged."""
        state = checkpoint.get("state_dict")
        strategy = self._trainer.strategy if self._trainer is not None else None
        if not isinstance(state, dict) or not isinstance(strategy, (SingleDeviceStrategy, DDPStrategy)) or \
                isinstance(strategy, DeepSpeedStrategy):
            return
        prints = {}
        for prefix, module in self._copied_references().items():
            keys = [k for k in state if k.startswith(prefix)]
            if keys:
                if prefix not in self._reference_prints:  # frozen: hashed once (load_backbone_weights resets it)
                    self._reference_prints[prefix] = weights_fingerprint(module)
                prints[prefix] = self._reference_prints[prefix]
                for k in keys:
                    del state[k]
        if prints:
            checkpoint[REFERENCE_KEY] = prints

    def _restore_references(self, checkpoint: dict[str, Any]) -> None:
        """Put the rebuilt reference's weights back into a checkpoint that left them out, after checking that it is
        the reference the run trained against. Resuming training with another one is an error; reading the
        checkpoint outside training (`load_from_checkpoint`, e.g. to evaluate the policy) only warns."""
        for prefix, saved in (checkpoint.get(REFERENCE_KEY) or {}).items():
            module = self._copied_references().get(prefix)
            if module is None:
                raise ReferenceMismatchError(
                    f"this checkpoint was trained against a reference copy ({prefix.rstrip('.')}), and this config "
                    "builds none; resume with the method settings of the run that wrote it (method.reference=copy)")
            if weights_fingerprint(module) != saved:
                msg = ("the reference model rebuilt for this resume is not the one the checkpoint was trained "
                       "against (its weights' fingerprint differs): the run must start from the same weights, i.e. "
                       "the same model/seed settings (or the recipe stage's starting point) as the run that wrote it")
                if self._trainer is not None:
                    raise ReferenceMismatchError(msg + "; or start a new run without ckpt_path")
                log.warning("%s; the policy is loaded, its reference is this config's own", msg)
            checkpoint["state_dict"].update({prefix + k: v for k, v in module.state_dict().items()})

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._restore_references(checkpoint)
        if RNG_KEY in checkpoint:
            _set_rng_states(rng_state_from_checkpoint(checkpoint[RNG_KEY]))
        elif LEGACY_RNG_KEY in checkpoint:
            log.warning("this checkpoint stores its RNG state pickled (written before 2026-12); it is not unpickled, "
                        "since unpickling a file can run code: random draws after this resume (dropout, sampling) "
                        "differ from an uninterrupted run's")
        self.skipped_steps = int(checkpoint.get("tokensmith_skipped_steps", 0))


RNG_KEY = "tokensmith_rng_state"
REFERENCE_KEY = "tokensmith_reference_fingerprints"  # {state-dict prefix: sha256} of the references left out
LEGACY_RNG_KEY = "tokensmith_rng"  # pickled bytes, never loaded


def rng_state_to_checkpoint(states: dict[str, Any]) -> dict[str, Any]:
    """Lightning's RNG states as tensors and plain python values only, so that `torch.load(weights_only=True)`
    (how Lightning and we load checkpoints) reads them without unpickling anything (numpy's key is an ndarray)."""
    out = dict(states)
    if "numpy" in out:
        name, keys, pos, has_gauss, cached = out["numpy"]
        out["numpy"] = [name, torch.from_numpy(keys.astype("int64")), int(pos), int(has_gauss), float(cached)]
    if "python" in out:
        version, state, gauss = out["python"]
        out["python"] = [version, list(state), gauss]
    return out


def rng_state_from_checkpoint(saved: dict[str, Any]) -> dict[str, Any]:
    """The inverse of `rng_state_to_checkpoint`."""
    import numpy as np

    out = dict(saved)
    if "numpy" in out:
        name, keys, pos, has_gauss, cached = out["numpy"]
        out["numpy"] = (name, keys.numpy().astype(np.uint32), pos, has_gauss, cached)
    if "python" in out:
        version, state, gauss = out["python"]
        out["python"] = (version, tuple(state), gauss)
    return out
