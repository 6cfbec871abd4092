"""Down-samplers: which rollouts, and which of their tokens, enter an RL objective's loss (`downsample=` group).

Every down-sampler is one object with one call: given a generation batch's advantages [N], the sampling policy's
entropies [N, T], the completion-token mask [N, T], the validity of each rollout [N] (a failed reward with
`on_error=drop` is invalid), the group size G, the training progress p ∈ [0, 1] and the rollout sampler's
generator, it returns a `Selection`: the selected rollouts [N] and the loss mask [N, T]. The masks are fixed for
all PPO epochs of the batch (src/models/rollout.py).

- `NoDownsample` (`downsample=none`): every valid rollout and all its completion tokens.
- `D3S` (`downsample=d3s`): the max-Var(A) subset of rollouts (pooled across groups, or within each group with
  `sample=intra`) and the top-K tokens by |A|·H among them, N(p) and K(p) linear in progress
  (src/losses/d3s.py has the rules and their worked example).
- `RandomDownsample` (`downsample=random`): the same counts as D³S, drawn uniformly with the rollout sampler's
  generator: the control that separates D³S's choice from its smaller budget.

Adding one: subclass `Downsampler`, implement `__call__`, add `conf/downsample/<name>.yaml` with its `_target_`.
Settings a class does not take are one error naming the ones it does (a misspelt key never passes silently).
A plain mapping `{mode: none|random|d3s, ...}` (the form checkpoints' hyper-parameters hold) builds the same
objects through `build_downsampler`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from src.losses.d3s import kept_count, linear_schedule, select_rollouts, select_tokens

SAMPLE_MODES = ("cross", "intra")


@dataclass(frozen=True)
class Selection:
    """What a down-sampler keeps: `rollouts` [N] bool (selected rollouts), `tokens` [N, T] bool (the loss mask:
    kept tokens of selected rollouts; a selected rollout may keep none), and the kept fractions used."""

    rollouts: Tensor
    tokens: Tensor
    n_frac: float = 1.0
    k_frac: float = 1.0


class Downsampler:
    """Keeps every valid rollout and every completion token (`downsample=none`); the base of all down-samplers."""

    mode = "none"

    def __init__(self, **unknown: Any) -> None:
        _refuse(type(self), unknown, ())

    def fractions(self, progress: float) -> tuple[float, float]:
        """(N(p), K(p)): the kept fractions of rollouts and of their tokens at progress p."""
        return 1.0, 1.0

    def __call__(self, advantages: Tensor, entropy: Tensor, token_mask: Tensor, valid: Tensor, group_size: int,
                 progress: float, generator: torch.Generator | None = None) -> Selection:
        """advantages [N], entropy [N, T], token_mask [N, T] bool, valid [N] bool -> Selection."""
        return Selection(valid.clone(), token_mask & valid[:, None])

    def describe(self) -> dict[str, Any]:
        """The settings as a plain mapping (the run's hyper-parameters; `build_downsampler` reads it back)."""
        return {"mode": self.mode}


NoDownsample = Downsampler


class ScheduledDownsampler(Downsampler):
    """A down-sampler that keeps N(p) of the rollouts and K(p) of their tokens, both linear in progress p."""

    settings = ("sample", "n_init", "n_final", "k_init", "k_final")

    def __init__(self, sample: str = "cross", n_init: float = 1.0, n_final: float = 1.0, k_init: float = 1.0,
                 k_final: float = 1.0, **unknown: Any) -> None:
        _refuse(type(self), unknown, self.settings)
        if sample not in SAMPLE_MODES:
            raise ValueError(f"downsample.sample must be one of {SAMPLE_MODES}, got {sample!r}")
        for key, value in (("n_init", n_init), ("n_final", n_final), ("k_init", k_init), ("k_final", k_final)):
            if not 0 < float(value) <= 1:
                raise ValueError(f"downsample.{key} is a kept fraction in (0, 1], got {value}")
        self.sample = sample
        self.n_init, self.n_final, self.k_init, self.k_final = (float(n_init), float(n_final), float(k_init),
                                                                float(k_final))

    def fractions(self, progress: float) -> tuple[float, float]:
        return (linear_schedule(progress, self.n_init, self.n_final),
                linear_schedule(progress, self.k_init, self.k_final))

    def describe(self) -> dict[str, Any]:
        return {"mode": self.mode, **{k: getattr(self, k) for k in self.settings}}


class D3S(ScheduledDownsampler):
    """D³S (module docstring): max-Var(A) rollouts, then the top-K tokens by |A|·H among them."""

    mode = "d3s"

    def __call__(self, advantages: Tensor, entropy: Tensor, token_mask: Tensor, valid: Tensor, group_size: int,
                 progress: float, generator: torch.Generator | None = None) -> Selection:
        n_frac, k_frac = self.fractions(progress)
        keep = select_rollouts(advantages, group_size, n_frac, self.sample) & valid  # [N]
        return Selection(keep, select_tokens(advantages, entropy, token_mask & keep[:, None], k_frac), n_frac, k_frac)


class RandomDownsample(ScheduledDownsampler):
    """D³S's counts drawn uniformly: N(p) rollouts (pooled, or per group with `sample=intra`), then K(p) of their
    tokens, with the rollout sampler's generator (so a resumed run draws the same)."""

    mode = "random"

    def __call__(self, advantages: Tensor, entropy: Tensor, token_mask: Tensor, valid: Tensor, group_size: int,
                 progress: float, generator: torch.Generator | None = None) -> Selection:
        if generator is None:
            raise ValueError("random down-sampling draws from the rollout sampler's generator; pass it")
        gen = generator
        n_frac, k_frac = self.fractions(progress)
        m = advantages.numel()
        keep = torch.zeros(m, dtype=torch.bool, device=advantages.device)  # [N]
        if self.sample == "cross":
            keep[torch.randperm(m, generator=gen, device=gen.device)[:kept_count(n_frac, m)].to(keep.device)] = True
        else:
            n = kept_count(n_frac, group_size, minimum=2)
            for start in range(0, m, group_size):
                pick = torch.randperm(group_size, generator=gen, device=gen.device)[:n].to(keep.device)
                keep[start + pick] = True
        mask = token_mask & (keep & valid)[:, None]  # [N, T]
        n_tokens = int(mask.sum())
        if n_tokens == 0:
            return Selection(keep & valid, mask, n_frac, k_frac)
        score = torch.rand(mask.shape, generator=gen, device=gen.device).to(mask.device).masked_fill(~mask, -1.0)
        top = torch.topk(score.flatten(), kept_count(k_frac, n_tokens)).indices
        out = torch.zeros(mask.numel(), dtype=torch.bool, device=mask.device)
        out[top] = True
        return Selection(keep & valid, out.view_as(mask) & mask, n_frac, k_frac)


MODES: dict[str, type[Downsampler]] = {"none": Downsampler, "random": RandomDownsample, "d3s": D3S}


def build_downsampler(spec: Downsampler | Mapping[str, Any] | None) -> Downsampler:
    """A down-sampler from the `downsample=` config: an object (what Hydra builds from a `_target_`), None (keep
    everything), or a mapping `{mode: none|random|d3s, ...settings}` (checkpoints' hyper-parameters)."""
    if spec is None:
        return Downsampler()
    if isinstance(spec, Downsampler):
        return spec
    if not isinstance(spec, Mapping):
        raise ValueError(f"downsample must be a down-sampler (src/models/downsamplers.py) or a mapping, got "
                         f"{type(spec).__name__}")
    settings = dict(spec)
    mode = settings.pop("mode", "none")
    if mode not in MODES:
        raise ValueError(f"downsample.mode must be one of {tuple(MODES)}, got {mode!r}")
    if mode == "none":  # a `none` mapping may carry unused fractions (older checkpoints): nothing to keep
        return Downsampler()
    return MODES[mode](**settings)


def _refuse(cls: type, unknown: Mapping[str, Any], known: tuple[str, ...]) -> None:
    if unknown:
        raise ValueError(f"downsample.{sorted(unknown)[0]} is not a setting of {cls.__name__} (downsample="
                         f"{cls.mode}); its settings: {', '.join(known) or 'none'}")
