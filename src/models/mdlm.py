"""Masked-diffusion LM objective (`method=mdlm`; LLaDA-style SFT, Rainbow Padding's model family; docs/mdlm.md).

A bidirectional backbone (the compact transformer or an HF model with `model.causal=false`) learns to predict the
clean token at every [MASK] position. Each training step samples the forward process of src/losses/mdlm.py (one t
per sequence, prompt never masked) and takes the LLaDA SFT loss, whose per-token CE comes from the fused log-prob kernel
(`batch_logprobs`: hidden states + output weight, never [B, T, V] logits). The loss is a sum over sequences with
the sequence count as denominator, so with `loss_normalization=step` the trained loss is the exact mean over
every sequence of the optimizer step, however the batch is split over micro-batches and ranks.

Batches: `input_ids` (clean) and `labels` = the clean token at each maskable position, -100 elsewhere (NOT
shifted; src/data/rainbow.py builds them). `mask_scope=all` instead masks every real token (`attention_mask`),
i.e. pretraining on prompt-less rows, whose labels are then ignored.

Masking RNG: training draws from a generator of its own, seeded by `mask_seed` (the run's seed) and the global
rank; its state travels in checkpoints, so a resumed run masks exactly like an uninterrupted one. Validation
re-seeds a second generator at every validation, so successive val losses are comparable.

Sampling: `sample_ids` (samples.txt, task evaluations) and `diffuse` run the LLaDA sampler
(src/models/components/mdlm_sampler.py); the answer is the text before the first end token, pads dropped.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from src.losses.mdlm import MASK_EPS, forward_mask, mdlm_loss
from src.models.components.mdlm_sampler import (
    REMASKING,
    DiffusionSample,
    answer_tokens,
    canvas_token_probs,
    diffusion_sample,
)
from src.models.fsdp import gathered
from src.models.logprobs import IGNORE_INDEX, batch_logprobs
from src.models.objective import Objective, StepOutput

MASK_SCOPES = ("answer", "all")
MASK_RNG_KEY = "tokensmith_mdlm_mask_rng"


class MaskedDiffusionModule(Objective):
    """LLaDA-form masked-diffusion training and sampling (module docstring)."""

    def __init__(
        self,
        backbone: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., torch.optim.lr_scheduler.LRScheduler] | None = None,
        mask_eps: float = MASK_EPS,
        mask_scope: str = "answer",
        mask_seed: int = 0,
        gen_length: int | None = None,
        steps: int | None = None,
        block_length: int | None = None,
        remasking: str = "low_confidence",
        **base: Any,
    ) -> None:
        if getattr(backbone, "causal", True):
            raise ValueError("method=mdlm needs a bidirectional backbone: set model.causal=false (the compact "
                             "transformer, experiment=rainbow/copy does; or an HF Llama-family model, "
                             "model=hf_llama_tiny)")
        if mask_scope not in MASK_SCOPES:
            raise ValueError(f"method.mask_scope={mask_scope!r} is not one of {MASK_SCOPES} (answer: SFT, prompt "
                             "never masked; all: pretraining, every real token maskable)")
        if remasking not in REMASKING:
            raise ValueError(f"method.remasking={remasking!r} is not one of {REMASKING}")
        if not 0.0 <= mask_eps < 1.0:
            raise ValueError(f"method.mask_eps must be in [0, 1), got {mask_eps}")
        if base.get("tokenizer") is not None and base["tokenizer"].mask_id is None:
            raise ValueError("method=mdlm needs a [MASK] token: use a canvas data module (data=rainbow_copy, "
                             "src/data/canvas_datamodule.py) or set data.tokenizer.mask=true")
        super().__init__(backbone, optimizer, scheduler, **base)
        self.mask_eps, self.mask_scope, self.mask_seed = float(mask_eps), mask_scope, int(mask_seed)
        self.gen_length, self.steps, self.block_length, self.remasking = gen_length, steps, block_length, remasking
        self._train_rng: torch.Generator | None = None
        self._val_rng: torch.Generator | None = None
        self._pending_rng_state: torch.Tensor | None = None

    @property
    def mask_id(self) -> int:
        if self.tokenizer is None or self.tokenizer.mask_id is None:
            raise ValueError("method=mdlm needs a tokenizer with a [MASK] token")
        return int(self.tokenizer.mask_id)

    # ---- masking RNG ---------------------------------------------------------------------------------------
    def _rank(self) -> int:
        try:
            return int(self.trainer.global_rank)
        except RuntimeError:  # not attached to a trainer (tests, notebooks)
            return 0

    def mask_generator(self) -> torch.Generator:
        """The generator of this step's masking draw: training's (checkpointed) or validation's (re-seeded)."""
        dev = self.device
        if not self.training:
            if self._val_rng is None or self._val_rng.device != dev:
                self._val_rng = torch.Generator(device=dev).manual_seed(self.mask_seed * 1_000_003 + 7)
            return self._val_rng
        if self._train_rng is None or self._train_rng.device != dev:
            self._train_rng = torch.Generator(device=dev).manual_seed(self.mask_seed * 1_000_003 + self._rank())
            if self._pending_rng_state is not None:
                self._train_rng.set_state(self._pending_rng_state)
                self._pending_rng_state = None
        return self._train_rng

    def on_validation_epoch_start(self) -> None:
        self._val_rng = None  # every validation sees the same masks

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        if self._train_rng is not None:
            checkpoint[MASK_RNG_KEY] = self._train_rng.get_state()
        elif self._pending_rng_state is not None:
            checkpoint[MASK_RNG_KEY] = self._pending_rng_state

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        state = checkpoint.get(MASK_RNG_KEY)
        self._train_rng, self._pending_rng_state = None, (state.cpu() if state is not None else None)

    # ---- loss --------------------------------------------------------------------------------------------
    def compute_loss(self, batch: dict[str, torch.Tensor]) -> StepOutput:
        clean = batch["input_ids"]  # [B, T]
        if self.mask_scope == "answer":
            maskable = batch["labels"] != IGNORE_INDEX  # [B, T] the canvas: answer, end token, padding
        else:
            am = batch.get("attention_mask")
            maskable = torch.ones_like(clean, dtype=torch.bool) if am is None else am.bool()
        noisy, masked, p_mask = forward_mask(clean, maskable, self.mask_id, eps=self.mask_eps,
                                             generator=self.mask_generator())
        targets = clean.masked_fill(~masked, IGNORE_INDEX)  # [B, T] CE only where [MASK] was put
        logp = batch_logprobs(self.backbone, {**batch, "input_ids": noisy}, labels=targets, kernel=self.kernel).logp
        num, stats = mdlm_loss(logp, masked, p_mask, maskable.sum(1), reduction="sum")
        n_masked = stats["n_masked"].clamp(min=1).float()
        metrics = {"masked_ce": stats["masked_nll_sum"] / n_masked,  # plain CE per masked token
                   "mask_rate": stats["n_masked"].float() / maskable.sum().clamp(min=1).float()}
        return StepOutput(num, stats["n_sequences"], capacity=int(clean.shape[0]), metrics=metrics)

    # ---- sampling ------------------------------------------------------------------------------------------
    @torch.no_grad()
    def diffuse(self, prompt_ids: Sequence[Sequence[int]], gen_length: int, *, steps: int | None = None,
                block_length: int | None = None, remasking: str | None = None, temperature: float = 0.0,
                generator: torch.Generator | None = None) -> DiffusionSample:
        """The LLaDA sampler on this model: `gen_length` canvas tokens after each prompt. Unset settings take the
        method's (`method.steps`, `method.block_length`, `method.remasking`), else steps = gen_length, 1 block."""
        tok = self.tokenizer
        steps = steps if steps is not None else self.steps
        block = block_length if block_length is not None else self.block_length
        if block is not None and gen_length % block:
            block = None  # a canvas that is not a multiple of the block length: one block
        with gathered(self.backbone):  # FSDP2: full weights for the output-weight matmul (src/models/fsdp.py)
            return diffusion_sample(
                self.backbone, prompt_ids, gen_length=gen_length, mask_id=self.mask_id, pad_id=tok.pad_id,
                steps=steps if steps is not None else gen_length, block_length=block,
                remasking=remasking or self.remasking, temperature=temperature, generator=generator,
            )

    def token_probs(self, prompt_ids: Sequence[Sequence[int]], canvases: torch.Tensor, token_id: int
                    ) -> torch.Tensor:  # canvases [B, G] ([MASK] where masked) -> [B, G]
        """p(x_i = token_id | prompt, canvas) at every canvas position in one forward (canvas_token_probs)."""
        with gathered(self.backbone):
            return canvas_token_probs(self.backbone, prompt_ids, canvases, token_id, mask_id=self.mask_id,
                                      pad_id=self.tokenizer.pad_id)

    @torch.no_grad()
    def sample_ids(self, prompt_ids: list[list[int]], max_new_tokens: int = 48,
                   temperature: float = 0.0) -> list[list[int]] | None:
        """Diffusion answers: the canvas (`method.gen_length`, else max_new_tokens) decoded by the answer rule,
        followed by the end token when the canvas has one (so callers that cut at <eos> see where it ended)."""
        tok = self.tokenizer
        if tok is None:
            return None
        gen_length = int(self.gen_length or max_new_tokens)
        out = self.diffuse([p or [tok.eos_id] for p in prompt_ids], gen_length, temperature=temperature)
        rows = []
        for canvas in out.canvas.tolist():
            ans = answer_tokens(canvas, tok.eos_id, tok.reserved_pad_ids)
            rows.append(ans + ([tok.eos_id] if tok.eos_id in canvas else []))
        return rows
