"""`RolloutObjective`: the on-policy RL loop every rollout objective shares (GRPO, RLOO, ...).

One training step = one generation batch (docs/grpo.md):
1. the B prompts of the data batch are sampled G times each with the KV cache (`num_generations`, `temperature`,
   `top_p`, `top_k`, `max_new_tokens`; stop at the end token) from the module's own checkpointed generator;
2. the reward (`reward=` config group, src/rewards/) scores every rollout; a failed score is counted and scored
   as `reward.on_error` says (`drop`: the rollout is invalid, gets A = 0 and no loss);
3. old log-probs and entropies once, without gradient (the fused kernel gives the entropy in the same pass), and
   reference log-probs when `beta > 0`;
4. the subclass's advantages (`advantages`: GRPO's group-relative, RLOO's leave-one-out);
5. the down-sampler (`downsample=`, src/models/downsamplers.py) picks the rollouts and tokens that enter the loss;
   the masks are fixed for the PPO epochs of the batch, and only rows with a kept token are forwarded again;
6. `ppo_epochs` optimizer updates, each over the whole generation batch (micro-batches of `micro_batch_size`
   rows accumulate), each micro-batch's loss from the subclass's `compute_loss` as numerator / denominator, the
   denominator summed over every micro-batch and rank *before* the backward (the subclass's `denominator`), so
   the update is exactly Σ numerator / Σ denominator of the whole generation batch whatever the split.

Manual optimisation (several updates per data batch), so this base does what `Objective`'s automatic path does:
the non-finite policy (`nonfinite`, the same `Objective.on_nonfinite_step`), gradient clipping (the trainer's
`gradient_clip_val`, applied here; Lightning refuses it under manual optimisation), the scheduler step per update,
and the DeepSpeed accumulation boundary. `trainer.max_steps` counts optimizer updates (generation batches ×
ppo_epochs); `trainer.accumulate_grad_batches` must be 1 (use `micro_batch_size`). Under DDP every rank samples
its own prompts and down-samples its own pool; the normalisers' counts are global.

Validation: greedy completions of the validation prompts, `val/reward` (mean over all prompts and ranks).

Callbacks receive each generation batch's rewards as a typed `RolloutRewards` under `outputs["rollouts"]` in
`on_train_batch_end` (skill labels included, for the curricula's per-skill reward).

A subclass implements `advantages(...)`, `compute_loss(batch)` and `denominator(loss_mask)` (docs/design.md,
"How to add an advantage estimator").
"""

from __future__ import annotations

import abc
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from lightning.pytorch.strategies import DeepSpeedStrategy
from torch import Tensor, nn
from torchmetrics import SumMetric

from src.models.components.generation import generate
from src.models.downsamplers import Downsampler, build_downsampler
from src.models.logprobs import batch_logprobs
from src.models.objective import Objective, StepOutput
from src.models.reference import REFERENCE_MODES, ReferenceModel, peft_model_of
from src.models.rollouts import completion_mask, left_pad, rollout_batch

log = logging.getLogger(__name__)

ROLLOUT_KEYS = ("input_ids", "labels", "attention_mask", "position_ids")
SAMPLER_KEY = "tokensmith_grpo_sampler"  # the sampling generator's state and the RL counters in checkpoints
ROLLOUTS_OUTPUT_KEY = "rollouts"  # where training_step's RolloutRewards sits in Lightning's `outputs` dict


@dataclass(frozen=True)
class RolloutRewards:
    """One generation batch's rewards on this rank: rewards [N] float, valid [N] bool (a dropped score is
    invalid), skills [N] long (the prompts' `skill` labels, repeated G times) or None, all on the CPU."""

    rewards: Tensor
    valid: Tensor
    skills: Tensor | None = None

    @staticmethod
    def of(outputs: Any) -> RolloutRewards | None:
        """The RolloutRewards inside a training step's `outputs` (as callbacks receive it), or None."""
        value = outputs.get(ROLLOUTS_OUTPUT_KEY) if isinstance(outputs, Mapping) else None
        return value if isinstance(value, RolloutRewards) else None

    def per_skill(self) -> dict[int, float]:
        """{skill: mean reward of its valid rollouts} (skills with no valid rollout left out)."""
        if self.skills is None:
            return {}
        out = {}
        for s in sorted(set(self.skills.tolist())):
            sel = (self.skills == s) & self.valid
            if bool(sel.any()):
                out[int(s)] = float(self.rewards[sel].mean())
        return out


def _all_reduce_sum(x: Tensor) -> Tensor:
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(x, op=dist.ReduceOp.SUM)
    return x


def _finite_or_nan(x: Any) -> float:
    try:
        return float(x)
    except (TypeError, ValueError):
        return math.nan


def _variance(a: Tensor) -> float:
    """Population variance of advantages (0 for fewer than 2)."""
    return float(a.double().var(unbiased=False)) if a.numel() > 1 else 0.0


def _deepspeed_micro_batch(engine: Any, last: bool) -> None:
    """Prepare DeepSpeed for one more forward/backward inside the same optimizer update.

    Why: under Lightning, the whole training step (generation, every micro-batch, every update) runs inside one
    call of the engine's forward, and Lightning's gradient_accumulation_steps is 1, so DeepSpeed would treat every
    backward as a whole step. It reduces gradients at an accumulation boundary only (ZeRO-2: a later micro-batch's
    gradients replaced the earlier ones'), and its ZeRO optimizers count micro-steps at the start of each engine
    forward (ZeRO-3 copied each micro-batch's gradient partition over the previous one instead of adding it). So:
    mark only the update's last backward as the boundary, and start each micro-batch as the engine's forward does.
    Measured before this (2 CPU ranks, micro-batches of 1-3 rows): weights 5e-2 to 8e-2 from DDP's after 4 updates."""
    engine.set_gradient_accumulation_boundary(last)
    clear = getattr(engine.optimizer, "clear_backward_seen_flag", None)  # ZeRO optimizers (DeepSpeed >= 0.18)
    if callable(clear):
        clear()


class RolloutObjective(Objective):
    """The on-policy loop over prompt batches (module docstring); subclasses give the advantages and the loss.

    reward: the built `reward=` config (a `RewardSet`, or any callable `(prompts, completions, **metadata) ->
        list[float]`). num_generations: G. beta: KL weight to the starting policy (0: no reference model; how it
        enters is the subclass's: GRPO's k3 term in the loss, RLOO's sequence KL in the reward). reference: copy |
        adapter | auto. downsample: a `Downsampler`, a `{mode: ..., ...}` mapping or None (keep everything).
    """

    data_formats = ("prompt",)
    data_hint = "prompts with answers (data.format=prompt, e.g. data=prompts_jsonl or data=arith_prompts)"
    method_name = "grpo"  # in error messages: "method=<name> ..."

    def __init__(
        self,
        backbone: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., torch.optim.lr_scheduler.LRScheduler] | None = None,
        reward: Callable[..., Any] | None = None,
        num_generations: int = 8,
        max_new_tokens: int = 32,
        temperature: float = 1.0,
        top_p: float = 1.0,
        top_k: int | None = None,
        beta: float = 0.0,
        reference: str = "auto",
        ppo_epochs: int = 1,
        micro_batch_size: int | None = None,
        downsample: Downsampler | Mapping[str, Any] | None = None,
        val_max_new_tokens: int | None = None,
        **base: Any,
    ) -> None:
        name = self.method_name
        if reward is None:
            raise ValueError(f"method={name} needs a reward: add reward=arith (or reward=format, or your own "
                             "reward.functions.<name>._target_=...; docs/grpo.md)")
        if not callable(reward):
            raise ValueError(f"the reward config built a {type(reward).__name__}, which is not callable")
        if num_generations < 2:
            raise ValueError(f"method.num_generations must be >= 2 (a group needs a contrast), got {num_generations}")
        if ppo_epochs < 1 or max_new_tokens < 1:
            raise ValueError("method.ppo_epochs and method.max_new_tokens must be >= 1")
        if not (temperature > 0 and 0 < top_p <= 1):
            raise ValueError(f"rollouts need method.temperature > 0 and 0 < method.top_p <= 1, got {temperature}, "
                             f"{top_p}")
        if beta < 0:
            raise ValueError(f"method.beta must be >= 0, got {beta}")
        if reference not in (*REFERENCE_MODES, "auto"):
            raise ValueError(f"method.reference={reference!r} is not one of {(*REFERENCE_MODES, 'auto')}")
        downsampler = build_downsampler(downsample)
        super().__init__(backbone, optimizer, scheduler, **base)
        self.automatic_optimization = False
        # The reward and the down-sampler are objects built from their config groups (their configs are in the
        # run's config): checkpoints (read with weights_only) must not pickle them; the down-sampler's settings
        # are kept as a plain mapping, which build_downsampler reads back.
        for store in (self.hparams, getattr(self, "_hparams_initial", {})):
            store.pop("reward", None)
            store["downsample"] = downsampler.describe()
        self.reward_fn = reward
        self.downsampler = downsampler
        self.g, self.max_new_tokens = int(num_generations), int(max_new_tokens)
        self.temperature, self.top_p, self.top_k = float(temperature), float(top_p), top_k
        self.beta = float(beta)
        self.ppo_epochs = int(ppo_epochs)
        self.micro_batch_size = int(micro_batch_size) if micro_batch_size else None
        self.val_max_new_tokens = int(val_max_new_tokens or max_new_tokens)
        self.max_grad_norm: float | None = None  # the trainer's gradient_clip_val, taken in configure_callbacks
        self.reference: ReferenceModel | None = None
        if self.beta > 0:
            if reference == "auto":
                reference = "adapter" if peft_model_of(backbone) is not None else "copy"
            self.reference = ReferenceModel(backbone, reference, kernel=self.kernel)
        # RL state that travels with checkpoints (on_save_checkpoint)
        self._generator: torch.Generator | None = None
        self._generator_state: Tensor | None = None  # restored state, applied when the generator is made
        self.backprop_tokens = 0  # completion tokens that entered the loss, × ppo_epochs, all ranks
        self.generation_batches = 0
        self.train_seconds = 0.0
        self.val_reward_sum, self.val_count = SumMetric(), SumMetric()

    # ---- what a subclass defines -----------------------------------------------------------------------------
    @abc.abstractmethod
    def advantages(self, rewards: Tensor, valid: Tensor, old_logp: Tensor, ref_logp: Tensor | None,
                   token_mask: Tensor) -> Tensor:
        """A [N] from rewards [N] (groups of G contiguous rows), valid [N], the sampling policy's log-probs
        [N, T], the reference's [N, T] (None when beta = 0) and the completion tokens [N, T]."""

    @abc.abstractmethod
    def denominator(self, loss_mask: Tensor) -> Tensor:
        """The units a micro-batch's loss mask [n, T] adds to the generation batch's denominator (scalar)."""

    # ---- set-up --------------------------------------------------------------------------------------------
    @property
    def optimizer_steps_per_batch(self) -> int:
        """Optimizer updates per data batch: the data module's stream position reads it (src/data/stream_position)."""
        return self.ppo_epochs

    def configure_callbacks(self) -> list[Any]:
        """Runs before Lightning validates the trainer: manual optimisation refuses `gradient_clip_val`, so this
        module takes it over (clips in `_update`) and refuses accumulation (use method.micro_batch_size)."""
        trainer = self.trainer
        clip = trainer.gradient_clip_val
        if clip:
            if trainer.gradient_clip_algorithm not in (None, "norm"):
                raise ValueError(f"method={self.method_name} clips by norm only; set "
                                 "trainer.gradient_clip_algorithm=norm")
            trainer.gradient_clip_val = None
            if isinstance(trainer.strategy, DeepSpeedStrategy):
                # Lightning's clip_gradients is a no-op under DeepSpeed, and the engine's config reads
                # gradient_clip_val after this hook (which just cleared it): hand the threshold to the engine,
                # which clips by the global norm inside its step.
                trainer.strategy.config.setdefault("gradient_clipping", float(clip))
            else:
                self.max_grad_norm = float(clip)
        if trainer.accumulate_grad_batches != 1:
            raise ValueError(
                f"method={self.method_name} optimises one generation batch per step (trainer.accumulate_grad_batches="
                f"{trainer.accumulate_grad_batches}); set it to 1 and use data.batch_size (prompts per step) and "
                "method.micro_batch_size (rows per forward) instead"
            )
        return []

    def on_fit_start(self) -> None:
        super().on_fit_start()
        self._normaliser = None  # the generation batch is normalised here, not by the step normaliser

    def sampler(self) -> torch.Generator:
        """The rollout sampling generator: seeded from the run's seed and the rank, restored from checkpoints."""
        if self._generator is None or self._generator.device != self.device:
            gen = torch.Generator(device=self.device)
            gen.manual_seed(int(torch.initial_seed()) * 1000 + 17 + int(self.global_rank))
            if self._generator_state is not None:
                gen.set_state(self._generator_state)
                self._generator_state = None
            self._generator = gen
        return self._generator

    # ---- rollouts --------------------------------------------------------------------------------------------
    @staticmethod
    def batch_size_of(batch: dict[str, Any]) -> int:
        key = "prompt_input_ids" if "prompt_input_ids" in batch else "input_ids"
        return int(batch[key].shape[0])

    def _generate(self, batch: dict[str, Any], repeat: int, greedy: bool,
                  max_new_tokens: int) -> tuple[dict[str, Tensor], list[str], dict[str, list[Any]]]:
        """(scorable rollout batch [B·repeat, T], completion texts, per-rollout metadata incl. `prompt`)."""
        tok = self.tokenizer
        if tok is None:
            raise ValueError(f"method={self.method_name} needs the tokenizer (decode completions for the reward)")
        if "prompt_input_ids" not in batch:
            raise KeyError(f"method={self.method_name} trains on prompt batches (data.format=prompt, e.g. "
                           f"data=arith_prompts); this batch has {sorted(batch)}")
        ids, mask = left_pad(batch["prompt_input_ids"], batch["prompt_attention_mask"], tok.pad_id)  # [B, L]
        ids, mask = ids.repeat_interleave(repeat, 0), mask.repeat_interleave(repeat, 0)  # [N, L]
        new = generate(self.backbone, ids, mask, max_new_tokens=max_new_tokens,
                       temperature=0.0 if greedy else self.temperature, top_k=None if greedy else self.top_k,
                       top_p=None if greedy else self.top_p, stop_token_ids=(tok.eos_id,), pad_token_id=tok.pad_id,
                       generator=None if greedy else self.sampler())  # [N, M]
        new_mask = completion_mask(new, (tok.eos_id,))  # [N, M]
        special = set(tok.special_ids)
        texts = [tok.decode([t for t, m in zip(row, keep) if m and t not in special])
                 for row, keep in zip(new.tolist(), new_mask.tolist())]
        meta: dict[str, list[Any]] = {}
        for key, value in batch.items():
            if isinstance(value, list):
                meta[key] = [v for v in value for _ in range(repeat)]
            elif key == "skill":
                meta[key] = [int(v) for v in value.tolist() for _ in range(repeat)]
        meta.setdefault("prompt", [tok.decode([t for t in row if t not in special]) for row in ids.tolist()])
        return rollout_batch(ids, mask, new, new_mask, tok.pad_id), texts, meta

    def _score(self, texts: list[str], meta: dict[str, list[Any]]) -> tuple[Tensor, Tensor, int]:
        """(rewards [N] float, valid [N] bool, failed scores) on the module's device."""
        prompts = meta["prompt"]
        extra = {k: v for k, v in meta.items() if k != "prompt"}
        try:
            out = self.reward_fn(prompts, texts, **extra)
        except Exception as err:  # noqa: BLE001 (a bare callable; a RewardSet isolates failures per rollout)
            log.warning("the reward raised %s: %s; every rollout of this batch scores 0 (use a RewardSet, "
                        "reward=..., to isolate failures per rollout)", type(err).__name__, err)
            out = [math.nan] * len(texts)
        if hasattr(out, "total") and hasattr(out, "valid"):  # a RewardSet: failures already isolated
            total, valid, errors = list(out.total), list(out.valid), int(out.n_errors)
        else:  # a bare callable: NaN / None count as failures scored 0
            total = [_finite_or_nan(x) for x in out]
            errors = sum(not math.isfinite(x) for x in total)
            total, valid = [x if math.isfinite(x) else 0.0 for x in total], [True] * len(total)
        if len(total) != len(texts):
            raise ValueError(f"the reward returned {len(total)} scores for {len(texts)} rollouts")
        return (torch.tensor(total, dtype=torch.float32, device=self.device),
                torch.tensor(valid, dtype=torch.bool, device=self.device), errors)

    @torch.no_grad()
    def _old_logprobs(self, rollouts: dict[str, Tensor]) -> tuple[Tensor, Tensor, Tensor | None]:
        """Old log-probs, entropies [N, T] (one fused pass, no gradient) and reference log-probs (or None), all at
        the sampling temperature: the policy the rollouts came from is softmax(z / T) (as in TRL)."""
        logps, ents, refs = [], [], []
        for sl in self._row_slices(rollouts["input_ids"].shape[0]):
            part = {k: rollouts[k][sl] for k in ROLLOUT_KEYS}
            out = batch_logprobs(self.backbone, part, kernel=self.kernel, with_entropy=True,
                                 temperature=self.temperature)
            logps.append(out.logp)
            ents.append(out.entropy)
            if self.reference is not None:
                refs.append(self.reference.logprobs(part, temperature=self.temperature))
        return torch.cat(logps), torch.cat(ents), (torch.cat(refs) if refs else None)

    def _row_slices(self, n: int) -> list[slice]:
        size = self.micro_batch_size or max(n, 1)
        return [slice(i, min(i + size, n)) for i in range(0, max(n, 1), size)]

    def progress(self) -> float:
        """Training progress p in [0, 1]: optimizer updates done / trainer.max_steps."""
        trainer = self._trainer  # None when the module is used without a trainer (tests, scripts): p = 0
        total = int(getattr(trainer, "max_steps", -1) or -1)
        return min(1.0, self.global_step / total) if total > 0 else 0.0

    # ---- one generation batch ------------------------------------------------------------------------------------
    def make_generation_batch(self, batch: dict[str, Any]) -> tuple[dict[str, Tensor], dict[str, Any]]:
        """Sample, score, old log-probs, advantages and the down-sampling masks: the fixed rollout batch (rows with
        no kept token removed) and its statistics (`rollout_rewards`: the typed rewards for callbacks)."""
        rollouts, texts, meta = self._generate(batch, self.g, greedy=False, max_new_tokens=self.max_new_tokens)
        rewards, valid, errors = self._score(texts, meta)  # [N], [N]
        self.backbone.train()  # old log-probs in the mode the loss is computed in: ratio 1 at the first epoch
        old_logp, entropy, ref_logp = self._old_logprobs(rollouts)  # [N, T]
        token_mask = rollouts["labels"] != -100  # [N, T]
        advantages = self.advantages(rewards, valid, old_logp, ref_logp, token_mask)  # [N]
        p = self.progress()
        chosen = self.downsampler(advantages, entropy, token_mask, valid, self.g, p, self.sampler())
        selected, loss_mask = chosen.rollouts, chosen.tokens  # [N], [N, T]
        kept_rows = loss_mask.any(-1)  # [N]
        stats: dict[str, Any] = {
            "reward_mean": float(rewards[valid].mean()) if bool(valid.any()) else 0.0,
            "reward_std": float(rewards[valid].std()) if int(valid.sum()) > 1 else 0.0,
            "reward_errors": float(errors),
            "completion_tokens_mean": float(token_mask.sum(-1).float().mean()),
            # the sampling policy's mean per-token entropy on its own rollouts (from the old-log-prob pass, free):
            # a collapse shows as a fall towards 0 before the reward falls
            "entropy_mean": float((entropy * token_mask).sum() / token_mask.sum().clamp(min=1)),
            "var_a_before": _variance(advantages[valid]),
            "var_a_after": _variance(advantages[selected]),
            "selected_rollouts": float(selected.sum()),
            "kept_rollouts": float(kept_rows.sum()),
            "kept_tokens": float(loss_mask.sum()),
            "selected_tokens": float((token_mask & selected[:, None]).sum()),
            "rollouts": float(rewards.numel()),
            "tokens": float(token_mask.sum()),
            "n_frac": chosen.n_frac,
            "k_frac": chosen.k_frac,
            "progress": p,
        }
        rows = kept_rows.nonzero().flatten()
        if rows.numel() == 0:  # nothing to learn from on this rank; one row with an empty mask keeps DDP in step
            rows = torch.zeros(1, dtype=torch.long, device=rewards.device)
        fixed = {k: rollouts[k][rows] for k in ROLLOUT_KEYS}
        fixed.update(advantages=advantages[rows], old_logp=old_logp[rows], loss_mask=loss_mask[rows])
        if ref_logp is not None:
            fixed["ref_logp"] = ref_logp[rows]
        skills = torch.tensor(meta["skill"]) if "skill" in meta else None
        stats["rollout_rewards"] = RolloutRewards(rewards.detach().cpu(), valid.cpu(), skills)
        return fixed, stats

    def _micro_batches(self, fixed: dict[str, Tensor]) -> list[dict[str, Tensor]]:
        """This rank's micro-batches, as many as the rank with the most (an extra one has an empty loss mask):
        every rank runs the same number of backwards, as DDP requires."""
        n = fixed["input_ids"].shape[0]
        slices = self._row_slices(n)
        count = torch.tensor(float(len(slices)), device=self.device)
        if self.trainer.world_size > 1:
            count = self.trainer.strategy.reduce(count, reduce_op="max")
        parts = [{k: v[sl] for k, v in fixed.items()} for sl in slices]
        while len(parts) < int(count):
            pad = {k: v[:1] for k, v in fixed.items()}
            pad["loss_mask"] = torch.zeros_like(pad["loss_mask"])
            parts.append(pad)
        return parts

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        start = time.perf_counter()
        fixed, stats = self.make_generation_batch(batch)
        parts = self._micro_batches(fixed)
        # The denominator of the whole generation batch, all micro-batches and ranks, known before any backward.
        local_den = sum(self.denominator(p["loss_mask"]).double() for p in parts)
        total_den = float(_all_reduce_sum(torch.as_tensor(local_den, device=self.device).clone()))
        world = int(self.trainer.world_size)
        opt = self.optimizers()
        sched = self.lr_schedulers()
        engine = self.trainer.strategy.deepspeed_engine if isinstance(self.trainer.strategy, DeepSpeedStrategy) \
            else None
        last: list[StepOutput] = []
        for _epoch in range(self.ppo_epochs):
            last = []
            for i, part in enumerate(parts):
                if engine is not None:
                    _deepspeed_micro_batch(engine, last=i == len(parts) - 1)
                out = self.compute_loss(part)
                # DDP averages gradients over ranks: × world makes the update ∇ Σ_all numerators / Σ_all denominators
                self.manual_backward(out.numerator * (world / max(total_den, 1e-12)))
                last.append(out.detached())
            self._update(opt, sched, last)
        kept = _all_reduce_sum(torch.tensor(stats["kept_tokens"], device=self.device, dtype=torch.float64))
        self.backprop_tokens += int(kept) * self.ppo_epochs
        self.generation_batches += 1
        self.train_seconds += time.perf_counter() - start
        rewards = stats.pop("rollout_rewards")
        self._log_generation_batch(stats, last, total_den)
        num = torch.stack([o.numerator for o in last]).sum()
        den = torch.stack([o.denominator.to(num.dtype) for o in last]).sum()
        return {"step": StepOutput(num, den, capacity=sum(o.capacity for o in last)), ROLLOUTS_OUTPUT_KEY: rewards}

    def _update(self, opt: Any, sched: Any, outs: list[StepOutput]) -> None:
        """One optimizer update: the non-finite policy, clipping, the step, the scheduler."""
        bad = torch.stack([(~torch.isfinite(o.numerator)).float() for o in outs]).sum()
        if float(_all_reduce_sum(bad)) > 0:
            self.on_nonfinite_step(opt)
            self.log("train/skipped_steps", float(self.skipped_steps), batch_size=1)
            return
        if self.max_grad_norm:
            self.clip_gradients(opt, gradient_clip_val=self.max_grad_norm, gradient_clip_algorithm="norm")
        opt.step()
        opt.zero_grad(set_to_none=True)
        if sched is not None:
            sched.step()

    def _log_generation_batch(self, stats: dict[str, Any], outs: list[StepOutput], total_den: float) -> None:
        num = float(_all_reduce_sum(torch.stack([o.numerator.double() for o in outs]).sum().clone()))
        log_kw = {"batch_size": 1, "on_step": True, "on_epoch": False}
        self.log("train/loss", num / max(total_den, 1e-12), prog_bar=True, **log_kw)
        for name in ("reward_mean", "reward_std", "completion_tokens_mean", "entropy_mean", "var_a_before",
                     "var_a_after"):
            self.log(f"train/{name}", stats[name], sync_dist=True, **log_kw)
        for name in ("reward_errors", "selected_rollouts", "kept_rollouts", "kept_tokens", "rollouts", "tokens"):
            self.log(f"train/{name}", stats[name], sync_dist=True, reduce_fx="sum", **log_kw)
        for name in ("n_frac", "k_frac", "progress"):
            self.log(f"train/{name}", stats[name], **log_kw)
        self.log("train/backprop_tokens", float(self.backprop_tokens), **log_kw)
        self.log("train/generation_batches", float(self.generation_batches), **log_kw)
        self.log("train/train_seconds", self.train_seconds, **log_kw)
        for name in outs[-1].metrics:
            self.log(f"train/{name}", torch.stack([o.metrics[name] for o in outs]).mean(), sync_dist=True, **log_kw)
        self._log_throughput(int(stats["tokens"]) * int(self.trainer.world_size), 1)

    # ---- validation ----------------------------------------------------------------------------------------------
    @torch.no_grad()
    def greedy_rewards(self, batch: dict[str, Any]) -> tuple[Tensor, Tensor]:
        """(rewards [B], valid [B]) of one greedy completion per prompt: `val/reward`'s measure, and the per-skill
        signal of skill curricula (src/callbacks/skills/evaluation.py). Greedy decoding draws nothing from the
        rollout sampler's generator, so calling it never changes the training rollouts."""
        _, texts, meta = self._generate(batch, 1, greedy=True, max_new_tokens=self.val_max_new_tokens)
        rewards, valid, _ = self._score(texts, meta)
        return rewards, valid

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        rewards, valid = self.greedy_rewards(batch)
        self.val_reward_sum.update(rewards[valid].sum())
        self.val_count.update(valid.sum().float())

    def on_validation_epoch_end(self) -> None:
        total, count = self.val_reward_sum.compute(), self.val_count.compute()
        self.log("val/reward", total / count.clamp(min=1), prog_bar=True, sync_dist=False)
        self.val_reward_sum.reset()
        self.val_count.reset()

    # ---- checkpoints ---------------------------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        state = self.sampler().get_state()  # [S] uint8, on the CPU
        if self.trainer.world_size > 1:  # every rank samples with its own generator: keep them all
            states = self.trainer.strategy.all_gather(state.to(self.device)).reshape(self.trainer.world_size, -1)
        else:
            states = state[None]
        checkpoint[SAMPLER_KEY] = {
            "generators": states.cpu(),  # [world, S]
            "backprop_tokens": self.backprop_tokens,
            "generation_batches": self.generation_batches,
            "train_seconds": self.train_seconds,
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        saved = checkpoint.get(SAMPLER_KEY)
        if saved is None:
            log.warning("this checkpoint has no rollout sampler state: rollouts after this resume differ from an "
                        "uninterrupted run's")
            return
        states = saved["generators"]  # [world, S]
        rank, world = int(self.global_rank), int(self.trainer.world_size) if self._trainer is not None else 1
        if states.shape[0] != world:
            log.warning("the checkpoint holds the sampling state of %d rank(s), this run has %d: rollouts after this "
                        "resume differ from an uninterrupted run's", states.shape[0], world)
        self._generator, self._generator_state = None, states[rank % states.shape[0]].clone()
        self.backprop_tokens = int(saved["backprop_tokens"])
        self.generation_batches = int(saved["generation_batches"])
        self.train_seconds = float(saved["train_seconds"])
