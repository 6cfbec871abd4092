"""`method.nonfinite`: a loss made NaN on purpose at a given step is skipped (update dropped, counted) or stops
the run with one message, the last good checkpoint staying the newest."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import lightning.pytorch as pl
import torch

from src.runtime.build import build_components
from tests.distributed import ROOT
from tests.helpers import compose_cfg

NAN = ["debug=smoke", "method._target_=tests.distributed.NaNLossAt", "callbacks.progress_bar=null",
       "callbacks.run_artifacts.sample_max_new_tokens=0", "trainer.accelerator=cpu"]


class _Weights(pl.Callback):
    """The backbone's weights after every optimizer step."""

    def __init__(self) -> None:
        self.after: dict[int, torch.Tensor] = {}

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: object) -> None:
        self.after[trainer.global_step] = torch.cat([p.detach().flatten() for p in pl_module.backbone.parameters()])


def test_skip_drops_that_steps_update_counts_it_and_trains_on(run_dir: Path) -> None:
    cfg = compose_cfg([*NAN, "+method.nan_at_steps=[2]", "method.nonfinite=skip", "trainer.max_steps=5"], run_dir)
    dm, module, trainer = build_components(cfg)
    probe = _Weights()
    trainer.callbacks.append(probe)
    trainer.fit(module, datamodule=dm)
    assert trainer.global_step == 5 and module.skipped_steps == 1
    assert torch.equal(probe.after[3], probe.after[2])  # step 3 (the NaN one) changed nothing
    assert not torch.equal(probe.after[4], probe.after[3])  # training went on
    assert all(torch.isfinite(w).all() for w in probe.after.values())
    assert float(trainer.callback_metrics["train/skipped_steps"]) == 1.0


def test_stop_ends_with_one_message_and_keeps_the_last_good_checkpoint(tmp_path: Path) -> None:
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "train.py", *NAN, "+method.nan_at_steps=[2]", "trainer.max_steps=6",
                           "trainer.val_check_interval=2", f"hydra.run.dir={run}"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "not finite at optimizer step 3" in proc.stderr and "method.nonfinite=skip" in proc.stderr
    assert "Traceback" not in proc.stderr
    last = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert last["global_step"] == 2  # saved before the bad step; nothing after it was written
    weights = [v for k, v in last["state_dict"].items() if k.startswith("backbone.")]
    assert all(torch.isfinite(w).all() for w in weights)
