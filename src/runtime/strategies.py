"""Distributed strategies that run on GPUs and, for tests and laptops, on CPU processes over gloo.

Lightning's `DeepSpeedStrategy` refuses any accelerator but CUDA in `setup_environment`, and its device checks
want indexed devices (`cpu:0`, `cpu:1`, ...), which Lightning's CPU accelerator does not hand out. DeepSpeed
itself runs ZeRO-1/2/3 on CPU tensors (with `DS_ACCELERATOR=cpu`, set by src/runtime/environment.py), so the
subclass below only swaps those two checks; on CUDA it is the stock strategy. Being able to run ZeRO on two CPU
processes is what lets tests/test_invariants.py prove ZeRO-2/3 train the same model as DDP without a GPU.
"""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch.accelerators import CPUAccelerator, CUDAAccelerator
from lightning.pytorch.strategies import DDPStrategy, DeepSpeedStrategy


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

