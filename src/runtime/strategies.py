"""Distributed strategies that run on GPUs and, for tests and laptops, on CPU processes over gloo.

Lightning's `DeepSpeedStrategy` refuses any accelerator but CUDA in `setup_environment`, and its device checks
want indexed devices (`cpu:0`, `cpu:1`, ...), which Lightning's CPU accelerator does not hand out. DeepSpeed
itself runs ZeRO-1/2/3 on CPU tensors (with `DS_ACCELERATOR=cpu`, set by src/runtime/environment.py), so the
subclass below only swaps those two checks; on CUDA it is the stock strategy. Being able to run ZeRO on two CPU
processes is what lets tests/test_invariants.py prove ZeRO-2/3 train the same model as DDP without a GPU.

`FSDP2Strategy` (`strategy=fsdp`) is PyTorch's FSDP2 through Lightning's `ModelParallelStrategy`, which already
runs on CPU/gloo; it only fixes the mesh to pure data parallelism and shards the backbone (src/models/fsdp.py).
"""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch.accelerators import CPUAccelerator, CUDAAccelerator
from lightning.pytorch.strategies import DDPStrategy, DeepSpeedStrategy, ModelParallelStrategy


class DeepSpeedAnyDeviceStrategy(DeepSpeedStrategy):
    """`DeepSpeedStrategy` that also accepts `trainer.accelerator=cpu` (gloo, one CPU process per device).

    `extra_config` is merged into the top level of the DeepSpeed config Lightning builds from the keyword
    arguments (e.g. `zero_force_ds_cpu_optimizer: false`, which ZeRO-Offload needs to accept a torch optimizer),
    `zero_config` into its `zero_optimization` section (e.g. `stage3_param_persistence_threshold`, which Lightning
    has no argument for). Both also extend a config given as a file (`strategy.config=ds.json`).
    """

    strategy_name = "deepspeed_any_device"

    def __init__(
        self,
        *args: Any,
        extra_config: dict[str, Any] | None = None,
        zero_config: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        if extra_config or zero_config:
            if not isinstance(self.config, dict) or (zero_config and "zero_optimization" not in self.config):
                raise ValueError(
                    "strategy.zero_config extends the config's zero_optimization section, and this DeepSpeed config "
                    "has none; set strategy.stage (or add zero_optimization to strategy.config's file)."
                )
            self.config.update(dict(extra_config or {}))
            if zero_config:
                self.config["zero_optimization"].update(dict(zero_config))

    def setup_environment(self) -> None:
        if isinstance(self.accelerator, CUDAAccelerator):
            super().setup_environment()
            return
        if not isinstance(self.accelerator, CPUAccelerator):
            raise RuntimeError(
                f"strategy={self.strategy_name} runs on CUDA GPUs or on CPU processes, not on "
                f"{type(self.accelerator).__name__}; set trainer.accelerator=gpu or cpu."
            )
        # DeepSpeed validates that device indices are 0..n-1; Lightning's CPU devices carry no index.
        n = len(self.parallel_devices or [None])
        self.parallel_devices = [torch.device("cpu", i) for i in range(n)]
        if self._process_group_backend is None:
            self._process_group_backend = "gloo"
        # Skip DeepSpeedStrategy's CUDA-only check; DDPStrategy's set-up calls our (DeepSpeed) setup_distributed.
        DDPStrategy.setup_environment(self)


class FSDP2Strategy(ModelParallelStrategy):
    """Fully sharded data parallelism with FSDP2 (`fully_shard`) on CUDA GPUs or CPU processes (gloo).

    Why not Lightning's `FSDPStrategy`: it wraps with FSDP1, which refuses CPU devices, and its precision plugin
    refuses norm clipping (docs/scaleout.md). Lightning's `ModelParallelStrategy` drives FSDP2 through
    `LightningModule.configure_model`; this subclass fixes its mesh to pure data parallelism (every rank holds
    1/world of each parameter, no tensor parallelism) and shards the module's `backbone` itself
    (src/models/fsdp.py), so an objective only needs a `configure_model` that calls `shard_backbone` (our
    `CausalLMModule` has it). Checkpoints: a directory of per-rank shards (`save_distributed_checkpoint: true`;
    tested resuming with the same world size) or one full file written by rank 0 (`false`);
    `python -m src.runtime.convert_checkpoint` turns the directory into one plain file.
    """

    strategy_name = "fsdp2"

    def __init__(self, *args: Any, reshard_after_forward: bool = True, param_dtype: str | None = None,
                 reduce_dtype: str | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("tensor_parallel_size", 1)
        super().__init__(*args, **kwargs)
        self.reshard_after_forward = bool(reshard_after_forward)
        self._dtypes = {"param_dtype": _dtype(param_dtype), "reduce_dtype": _dtype(reduce_dtype)}

    def setup_environment(self) -> None:
        if self._data_parallel_size == "auto":  # every rank of every node is one data-parallel replica
            self._data_parallel_size = self.num_nodes * self.num_processes
        super().setup_environment()

    def shard_backbone(self, backbone: torch.nn.Module) -> None:
        """Called from the LightningModule's `configure_model`: shard `backbone` over the data-parallel mesh."""
        from torch.distributed.fsdp import MixedPrecisionPolicy

        from src.models.fsdp import apply_fsdp2

        policy = MixedPrecisionPolicy(**self._dtypes) if any(self._dtypes.values()) else None
        apply_fsdp2(backbone, self.device_mesh["data_parallel"], reshard_after_forward=self.reshard_after_forward,
                    mp_policy=policy)


def _dtype(name: str | None) -> torch.dtype | None:
    if name is None:
        return None
    dtypes = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16,
              "fp32": torch.float32, "float32": torch.float32}
    if name not in dtypes:
        raise ValueError(f"strategy: unknown dtype {name!r}; use one of {sorted(dtypes)} or null")
    return dtypes[name]
