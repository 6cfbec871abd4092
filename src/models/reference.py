"""The reference model of objectives that regularise toward a fixed policy (DPO's log-ratios, GRPO's KL term).

Three ways to hold it, one interface (`ReferenceModel.logprobs(batch, prefix=...)` -> [B, T]):

- `copy`: a frozen deep copy of the policy's backbone, taken when the objective is built (i.e. of the weights the
  policy starts from). It is a registered submodule, so Lightning moves it to the device and every strategy places
  it like the policy: DDP ignores it (no gradients), FSDP2 shards it in `Objective.configure_model`, DeepSpeed
  ZeRO-3 partitions it with the rest of the module and gathers each layer as it runs. It is NOT saved in full
  checkpoints (single device, DDP): it is the starting weights, which a resumed run rebuilds (from the config, or
  the recipe stage's / fine-tune's starting point). The checkpoint keeps a SHA-256 fingerprint of it instead, and
  resuming compares the rebuilt reference with it, so a resume can never score against another reference
  (`Objective.on_save_checkpoint`). Sharded checkpoints (FSDP2, DeepSpeed) still hold it.
- `adapter`: the policy itself with its peft (LoRA) adapter switched off, for LoRA runs: no second copy in memory.
- `precomputed`: reference log-probs computed once, before training, and carried by the batch as
  `<prefix>ref_logp` [B, T] (0 where the label is ignored); no reference forward at all during training.

Combinations that cannot work are refused when the objective is built, with the fix: `adapter` without a peft
adapter on the backbone; `copy` of a backbone that is already sharded.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
from collections.abc import Iterator, Mapping

import torch
from torch import Tensor, nn

from src.models.fsdp import is_fsdp2
from src.models.logprobs import batch_logprobs, batch_view

REFERENCE_MODES = ("copy", "adapter", "precomputed")


class ReferenceMismatchError(ValueError):
    """A resumed run rebuilt a reference that is not the one its checkpoint was trained against."""


def weights_fingerprint(module: nn.Module) -> str:
    """SHA-256 of a module's state: every tensor's name, dtype, shape and bytes, in name order. Equal weights give
    equal fingerprints on any device; one changed bit changes it. (~1 s per GB on a CPU core.)"""
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        t = t.detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def peft_model_of(backbone: nn.Module) -> nn.Module | None:
    """The peft wrapper inside a backbone (HFBackbone.model when LoRA is on), else None."""
    inner = getattr(backbone, "model", None)
    return inner if inner is not None and hasattr(inner, "disable_adapter") else None


class ReferenceModel(nn.Module):
    """Frozen reference log-probs for an objective; see the module docstring for the modes."""

    def __init__(self, policy: nn.Module, mode: str = "copy", kernel: str | None = None) -> None:
        super().__init__()
        if mode not in REFERENCE_MODES:
            raise ValueError(f"method.reference={mode!r} is not one of {REFERENCE_MODES}")
        self.mode, self.kernel = mode, kernel
        self._policy = [policy]  # a list: not a submodule (the objective owns the policy)
        self.frozen: nn.Module | None = None
        if mode == "adapter" and peft_model_of(policy) is None:
            raise ValueError(
                "method.reference=adapter needs a LoRA backbone (model.lora=...): it scores the policy with its "
                "adapter switched off; use method.reference=copy for a fully trained model"
            )
        if mode == "copy":
            if any(type(p).__name__ == "DTensor" for p in policy.parameters()):
                raise ValueError("method.reference=copy must be built before the policy is sharded (FSDP2 shards "
                                 "both in configure_model); build the objective before trainer.fit")
            self.frozen = copy.deepcopy(policy)
            self.frozen.requires_grad_(False)
            self.frozen.eval()

    def train(self, mode: bool = True) -> ReferenceModel:
        """Stays in eval mode whatever Lightning asks: a reference never samples dropout masks."""
        super().train(mode)
        if self.frozen is not None:
            self.frozen.eval()
        return self

    @property
    def module(self) -> nn.Module | None:
        """The model that runs forwards for the reference (None when precomputed); shard it like the policy."""
        return self.frozen

    @contextlib.contextmanager
    def _scoring_model(self) -> Iterator[nn.Module]:
        if self.frozen is not None:
            yield self.frozen
            if is_fsdp2(self.frozen):
                # FSDP2 keeps a root module's parameters gathered after its forward, expecting the backward soon;
                # a reference has no backward, so its embedding and head would stay whole on every rank.
                self.frozen.reshard()
            return
        policy = self._policy[0]
        peft = peft_model_of(policy)
        was_training = policy.training
        policy.eval()  # no dropout in the reference's forward (the policy's own forward keeps its mode)
        try:
            with peft.disable_adapter():
                yield policy
        finally:
            policy.train(was_training)

    @torch.no_grad()
    def logprobs(self, batch: Mapping[str, Tensor], prefix: str = "", temperature: float = 1.0) -> Tensor:
        """Reference log π_ref(labels) [B, T] for one view of the batch; 0 where the label is ignored. `temperature`:
        the logits are divided by it first (GRPO's rollouts sampled at T are scored at T, as TRL does)."""
        if self.mode == "precomputed":
            view = batch_view(batch, prefix)
            if "ref_logp" not in view:
                raise KeyError(
                    f"method.reference=precomputed but the batch has no {prefix}ref_logp; precompute the reference "
                    "log-probs into the data, or use method.reference=copy"
                )
            return view["ref_logp"]
        with self._scoring_model() as model:
            return batch_logprobs(model, batch, prefix=prefix, kernel=self.kernel, temperature=temperature).logp
