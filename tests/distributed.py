"""Helpers for tests that launch `python train.py` as 1-2 CPU processes (DDP, DeepSpeed) and compare the runs.

Lightning's DDP on CPU starts its extra ranks by re-running the command line, so multi-process runs are driven
through a subprocess of train.py. The callbacks below are added to such a run from the command line
(`+callbacks.loss_probe._target_=tests.distributed.GlobalLossProbe`); the repository root is on the import path
of train.py.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback

from src.models.lm import CausalLMModule
from src.models.logprobs import batch_logprobs
from src.models.objective import StepOutput
from src.models.reference import ReferenceModel
from src.runtime.convert_checkpoint import convert

ROOT = Path(__file__).resolve().parents[1]
PROBE = "+callbacks.loss_probe._target_=tests.distributed.GlobalLossProbe"


class GlobalLossProbe(Callback):
    """Every rank's label-NLL sum and label-token count on every micro-batch, written by rank 0 to loss_probe.json.

    The module logs `train/loss` per micro-batch (averaged over ranks), so a DDP run's CSV cannot be compared with a
    single-process run's; these records give the token-mean loss of each optimizer step over all its micro-batches.
    """

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        # The module returns each micro-batch's label-NLL sum and count next to the (scaled) objective.
        out = StepOutput.of(outputs)
        local = torch.stack([out.numerator.double(), out.denominator.double()]).to(pl_module.device)  # [2]
        assert int(out.denominator) == int((batch["labels"] != -100).sum())
        gathered = trainer.strategy.all_gather(local).reshape(-1, 2).cpu()  # [world, 2]
        self.records.append({
            "step": int(trainer.global_step),  # after this micro-batch (advances on a window's last one)
            "batch_idx": int(batch_idx),
            "nll_sum": gathered[:, 0].tolist(),
            "n_tokens": [int(n) for n in gathered[:, 1].tolist()],
        })

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.global_rank == 0:
            Path(trainer.default_root_dir, "loss_probe.json").write_text(json.dumps(self.records))


class StopAtStep(Callback):
    """Simulates an interruption: training ends after optimizer step `step` although max_steps is larger."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        if trainer.global_step >= self.step:
            trainer.should_stop = True


def train_subprocess(run_dir: Path, overrides: list[str], timeout: int = 240) -> Path:
    """`python train.py <overrides>` writing into `run_dir`; every rank of a launch re-runs the same command."""
    env = {k: v for k, v in os.environ.items() if k != "TOKENSMITH_RUN_NAME"}
    env["OMP_NUM_THREADS"] = "1"  # one thread per rank: no oversubscription on small CI machines
    proc = subprocess.run([sys.executable, "train.py", *overrides, f"hydra.run.dir={run_dir}"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return run_dir


def step_losses(run_dir: Path, accumulate: int = 1) -> dict[int, float]:
    """{optimizer step (1-based): token-mean loss over the step's ranks and accumulated micro-batches}."""
    records = json.loads((run_dir / "loss_probe.json").read_text())
    steps: dict[int, list[float]] = {}
    for r in records:
        # the window's last micro-batch has already advanced global_step; the others have not
        step = r["step"] if (r["batch_idx"] + 1) % accumulate == 0 else r["step"] + 1
        nll, n = steps.setdefault(step, [0.0, 0.0])
        steps[step] = [nll + sum(r["nll_sum"]), n + sum(r["n_tokens"])]
    return {s: nll / max(n, 1) for s, (nll, n) in sorted(steps.items())}


def logged_train_losses(run_dir: Path) -> list[float]:
    """The run's `train/loss` in step order, as its CSV logger wrote it (csv/metrics.csv: one row per logged
    micro-batch, under `debug=smoke` every step)."""
    with (run_dir / "csv" / "metrics.csv").open() as f:
        rows = [r for r in csv.DictReader(f) if r.get("train/loss")]
    return [float(r["train/loss"]) for r in sorted(rows, key=lambda r: int(r["step"]))]


def token_counts(run_dir: Path) -> set[int]:
    """The distinct label-token counts of the micro-batches the run trained on."""
    return {n for r in json.loads((run_dir / "loss_probe.json").read_text()) for n in r["n_tokens"]}


def final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    """The state dict at the last step: a plain last.ckpt, or a DeepSpeed directory consolidated by our command."""
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    if ckpt.is_dir():
        ckpt = convert(ckpt, run_dir / "consolidated.ckpt")
    return torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]


class ReferenceProbeLM(CausalLMModule):
    """The causal LM plus a frozen reference (src/models/reference.py) scored on every batch: logs
    `train/ref_gap`, the label-token mean of log π − log π_ref (0 while the policy equals its starting weights),
    and writes how the strategy placed the reference to reference_probe.json (rank 0)."""

    def __init__(self, *args: Any, reference: str = "copy", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.reference = ReferenceModel(self.backbone, reference, kernel=self.kernel)

    def compute_loss(self, batch: dict[str, torch.Tensor]) -> StepOutput:
        out = super().compute_loss(batch)
        tl = batch_logprobs(self.backbone, batch, kernel=self.kernel)  # [B, T]
        gap = ((tl.logp.detach() - self.reference.logprobs(batch)) * tl.mask).sum() / tl.mask.sum().clamp(min=1)
        out.metrics["ref_gap"] = gap
        return out

    def on_train_end(self) -> None:
        ref = self.reference.module
        params = list(ref.parameters()) if ref is not None else []
        # Where each rank holds only a shard: FSDP2 DTensors, or DeepSpeed ZeRO-3 partitions (ds_tensor).
        local = sum(p.to_local().numel() if type(p).__name__ == "DTensor" else
                    p.ds_tensor.numel() if hasattr(p, "ds_tensor") else p.numel() for p in params)
        full = sum(p.ds_numel if hasattr(p, "ds_numel") else p.numel() for p in params)
        if self.trainer.global_rank == 0:
            Path(self.trainer.default_root_dir, "reference_probe.json").write_text(json.dumps({
                "param_types": sorted({type(p).__name__ for p in params}),
                "requires_grad": any(p.requires_grad for p in self.reference.parameters()),
                "local_fraction": local / max(full, 1)}))


class NaNLossAt(CausalLMModule):
    """The causal LM whose training loss is made NaN on purpose at the given optimizer steps (0-based
    global_step when the micro-batch runs): tests the `method.nonfinite` policies."""

    def __init__(self, *args: Any, nan_at_steps: list[int] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.nan_at_steps = set(nan_at_steps or [])

    def compute_loss(self, batch: dict[str, torch.Tensor]) -> StepOutput:
        out = super().compute_loss(batch)
        if self.training and int(self.trainer.global_step) in self.nan_at_steps:
            out.numerator = out.numerator * float("nan")
        return out


class Pace(Callback):
    """Slows a run down and says where it is, so a test can kill it in a chosen phase: writes `phase` (train /
    val) into the run dir and sleeps `train_s` per training batch and `val_s` per validation batch."""

    def __init__(self, train_s: float = 0.05, val_s: float = 0.3) -> None:
        self.train_s, self.val_s = train_s, val_s

    def _mark(self, trainer: pl.Trainer, phase: str) -> None:
        if trainer.global_rank == 0:
            Path(trainer.default_root_dir, "phase").write_text(f"{phase} {trainer.global_step}")

    def on_train_batch_start(self, trainer: pl.Trainer, *args: Any) -> None:
        self._mark(trainer, "train")
        time.sleep(self.train_s)

    def on_validation_batch_start(self, trainer: pl.Trainer, *args: Any) -> None:
        if not trainer.sanity_checking:
            self._mark(trainer, "val")
            time.sleep(self.val_s)
