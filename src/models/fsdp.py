"""FSDP2 (`torch.distributed.fsdp.fully_shard`) for our backbones: which modules to shard, and how code outside
`forward` (generation, the fused kernel's output weight) sees whole parameters.

Why the grouping: one FSDP unit per transformer block (gathered for its forward, freed after, gathered again for
its backward) plus the backbone itself as the root unit, which holds the embedding, the final norm and the output
head. FSDP2 never frees the root unit after forward (it would be gathered again at once for backward), so when the
objective reads `backbone.output_weight` *after* the backbone's forward — every objective does, to hand it to the
fused kernel — it gets the gathered [V, d] weight, and the kernel's gradient accumulates on it and is
reduce-scattered with the rest of the root unit at the end of backward. Sharding the head as its own unit, or
reading the weight before the forward, would hand the kernel a shard (tests/test_invariants.py proves the
gradients equal DDP's).

Generation (`forward_cached`) bypasses `forward`, so FSDP's hooks never gather for it: `gathered(backbone)` does
it explicitly (every rank must enter it together: it is collective).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from torch import nn


def is_fsdp2(module: nn.Module) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(module, FSDPModule)


def transformer_blocks(backbone: nn.Module) -> list[nn.Module]:
    """The repeated blocks: the first non-empty `nn.ModuleList` (CompactTransformer.layers, HF `model.layers`)."""
    for module in backbone.modules():
        if isinstance(module, nn.ModuleList) and len(module) > 0:
            return list(module)
    raise ValueError(
        f"{type(backbone).__name__} has no nn.ModuleList of blocks to shard; strategy=fsdp needs one (or use "
        "strategy=deepspeed_zero3, which shards any module)"
    )


def apply_fsdp2(backbone: nn.Module, mesh: Any, *, reshard_after_forward: bool = True,
                mp_policy: Any | None = None) -> None:
    """Shard `backbone` in place over the 1-D data-parallel `mesh`: each block, then the backbone as root.

    `reshard_after_forward=False` keeps blocks gathered between forward and backward (ZeRO-2-like memory, one
    all-gather fewer per block); `mp_policy` is an FSDP2 `MixedPrecisionPolicy` (e.g. bf16 params, fp32 reduce).
    Idempotent: a backbone already sharded is left as it is.
    """
    from torch.distributed.fsdp import fully_shard

    if is_fsdp2(backbone):
        return
    kw: dict[str, Any] = {"mesh": mesh}
    if mp_policy is not None:
        kw["mp_policy"] = mp_policy
    for block in transformer_blocks(backbone):
        fully_shard(block, reshard_after_forward=reshard_after_forward, **kw)
    fully_shard(backbone, **kw)


@contextmanager
def gathered(backbone: nn.Module) -> Iterator[nn.Module]:
    """Whole parameters inside the block, for code that does not go through `forward` (generation). Collective
    under FSDP2 (all ranks must enter); a no-op for any other backbone."""
    units = [m for m in backbone.modules() if is_fsdp2(m)]
    if not units:
        yield backbone
        return
    for unit in units:
        unit.unshard()
    try:
        yield backbone
    finally:
        for unit in units:
            unit.reshard()
