"""fp32 master weights for a model whose parameters are bf16 (`trainer.precision=bf16-true`).

Why: under `bf16-mixed` the parameters are fp32 and autocast casts every weight to bf16 at every matmul, in the
forward and again in the backward, and the gradients are fp32; under `bf16-true` the model *is* bf16 (no casts,
half the parameter and gradient memory), but an optimizer stepping bf16 weights directly loses small updates: a
bf16 weight has 8 bits of mantissa, so an update below ~1/256 of the weight rounds away (lr 1e-4 · unit Adam step
on a weight of 0.05 is 2e-3 of it, below that). `MasterWeights` keeps an fp32 copy of every parameter and runs
the inner optimizer (AdamW, fused on GPU) on the copies; after each step the copies are rounded into the bf16
parameters. Memory per parameter: 2 (bf16 weight) + 2 (bf16 grad) + 4 (master) + 8 (fp32 moments) = 16 bytes,
the same as bf16-mixed's 4 + 4 + 8, minus the autocast weight copies.

Use it with one device or DDP. DeepSpeed (its `bf16` config) and FSDP2 (`strategy.param_dtype=bf16`: sharded
fp32 parameters, bf16 compute copies) already keep fp32 master weights of their own.

    python train.py trainer.precision=bf16-true \
        method.optimizer._target_=src.models.master_weights.master_weight_adamw +method.optimizer.fused=true

The parameters the rest of the framework sees (`param_groups`, for the lr scheduler and Lightning's gradient
clipping) are the model's own; the scheduler's lr is copied into the inner optimizer before every step.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor


def _groups(params: Iterable[Any]) -> list[dict[str, Any]]:
    """Param groups as dicts with a list of tensors, from either form torch optimizers accept."""
    params = list(params)
    if not params:
        raise ValueError("the optimizer got an empty parameter list")
    if not isinstance(params[0], dict):
        params = [{"params": params}]
    return [{**g, "params": list(g["params"])} for g in params]


class MasterWeights(torch.optim.Optimizer):
    """Runs `inner` on fp32 copies of the parameters and writes the result back into them (any dtype).

    Example, by hand (one bf16 weight of 1.0, its gradient 1.0, plain SGD at lr 1e-3): SGD on the bf16 weight
    gives 1.0 - 1e-3 = 0.999, which rounds back to 1.0 in bf16 (the next value below 1.0 is 1 - 2^-8 =
    0.99609375, and 0.999 is nearer 1.0), so every step is lost; here the master becomes 0.999 in fp32 and, after
    the second step, 0.998, which is nearer 0.99609375: the bf16 weight reads 0.99609375
    (`tests/models/test_master_weights.py`).
    """

    def __init__(self, params: Iterable[Any], inner: Callable[..., torch.optim.Optimizer],
                 master_dtype: torch.dtype = torch.float32) -> None:
        groups = _groups(params)
        masters = [[p.detach().to(master_dtype, copy=True) for p in g["params"]] for g in groups]
        self.inner = inner([{**{k: v for k, v in g.items() if k != "params"}, "params": m}
                            for g, m in zip(groups, masters)])
        # the model's parameters, with every hyperparameter the inner optimizer filled in (lr, betas, ...)
        super().__init__([{**ig, "params": g["params"]} for g, ig in zip(groups, self.inner.param_groups)],
                         defaults=dict(self.inner.defaults))

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # noqa: D102
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group, inner_group in zip(self.param_groups, self.inner.param_groups):
            for key, value in group.items():  # the lr scheduler writes lr into our groups
                if key != "params":
                    inner_group[key] = value
            for p, m in zip(group["params"], inner_group["params"]):
                m.grad = None if p.grad is None else p.grad.to(m.dtype)  # [same shape as p]
        self.inner.step()
        for group, inner_group in zip(self.param_groups, self.inner.param_groups):
            params = [p for p, m in zip(group["params"], inner_group["params"]) if m.grad is not None]
            stepped = [m for m in inner_group["params"] if m.grad is not None]
            if params:
                torch._foreach_copy_(params, stepped)  # rounds to the parameters' dtype
            for m in inner_group["params"]:
                m.grad = None
        return loss

    def masters(self) -> list[Tensor]:
        """The fp32 copies, in parameter order (what the next step starts from)."""
        return [m for g in self.inner.param_groups for m in g["params"]]

    def state_dict(self) -> dict[str, Any]:  # noqa: D102
        return {"inner": self.inner.state_dict(), "masters": [m.detach().clone() for m in self.masters()],
                "param_groups": super().state_dict()["param_groups"]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:  # noqa: D102
        if "masters" not in state_dict or "inner" not in state_dict:
            raise ValueError("this optimizer state was not saved by MasterWeights (no fp32 master weights in it): "
                             "resume with the optimizer the run was saved with, or start a new run")
        saved = state_dict["masters"]
        mine = self.masters()
        if len(saved) != len(mine) or any(s.shape != m.shape for s, m in zip(saved, mine)):
            raise ValueError("the saved master weights do not match this model's parameters (count or shapes)")
        self.inner.load_state_dict(state_dict["inner"])
        with torch.no_grad():
            for s, m in zip(saved, mine):
                m.copy_(s)
        for group, saved_group in zip(self.param_groups, state_dict["param_groups"]):
            group.update({k: v for k, v in saved_group.items() if k != "params"})


def master_weight_adamw(params: Iterable[Any], master_dtype: torch.dtype | str = torch.float32,
                        **adamw: Any) -> MasterWeights:
    """`torch.optim.AdamW(**adamw)` on fp32 masters: the drop-in `method.optimizer._target_` for bf16-true runs
    (the same keys as AdamW: lr, betas, weight_decay, eps, fused, foreach)."""
    if isinstance(master_dtype, str):
        master_dtype = getattr(torch, master_dtype, None)
    if not isinstance(master_dtype, torch.dtype) or not master_dtype.is_floating_point:
        raise ValueError(f"master_dtype must name a torch floating dtype such as float32 (got {master_dtype!r})")
    return MasterWeights(params, lambda groups: torch.optim.AdamW(groups, **adamw), master_dtype=master_dtype)
