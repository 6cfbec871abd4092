"""Preemption without SLURM: a real signal mid-step → checkpoint at the next optimizer-step boundary → exit →
the next start in the same run dir resumes by itself and ends exactly where an uninterrupted run ends."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from omegaconf import open_dict

from src.runtime.checkpoint_io import atomic_torch_save
from src.runtime.preemption import RECORD_FILE, Preempted, PreemptionCheckpoint, auto_resume_ckpt
from src.runtime.run import run_training
from src.runtime.wandb_resume import ID_FILE, pin_wandb_run_id
from tests.helpers import ROOT, compose_cfg

STEPS, ACCUM = 8, 2
TINY = [
    "trainer.accelerator=cpu", "callbacks.progress_bar=null", "callbacks.run_artifacts.sample_max_new_tokens=0",
    "model.d_model=32", "model.n_layers=1", "model.n_heads=2", "data.seq_len=32", "data.batch_size=4",
    f"trainer.max_steps={STEPS}", "trainer.val_check_interval=4", "trainer.limit_val_batches=1",
    f"trainer.accumulate_grad_batches={ACCUM}", "method.scheduler.warmup_steps=2", "trainer.log_every_n_steps=1",
]


class SignalMidWindow(pl.Callback):
    """Sends `signum` to this process during the first micro-batch of optimizer step `step`'s window, i.e. between
    two step boundaries, where saving would snapshot half-accumulated gradients."""

    def __init__(self, step: int, signum: int) -> None:
        self.step, self.signum = step, signum
        self.sent = False

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: object,
                             batch_idx: int) -> None:
        if not self.sent and trainer.global_step == self.step - 1 and batch_idx % ACCUM == 0:
            self.sent = True
            os.kill(os.getpid(), self.signum)


def _run(run_dir: Path, signal_at_step: int | None = None, signum: int = 0) -> dict:
    cfg = compose_cfg(TINY, run_dir)
    if signal_at_step is not None:
        with open_dict(cfg):
            cfg.callbacks.signal_sender = {"_target_": f"{__name__}.SignalMidWindow", "step": signal_at_step,
                                           "signum": int(signum)}
    return run_training(cfg)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGUSR2])
def test_signal_checkpoints_at_step_boundary_and_resume_matches(tmp_path: Path, signum: int) -> None:
    torch.set_num_threads(1)
    handler_before = signal.getsignal(signum)
    straight = _run(tmp_path / "straight")

    run_dir = tmp_path / "preempted"
    started = time.time()
    with pytest.raises(Preempted) as exc:
        _run(run_dir, signal_at_step=5, signum=signum)
    assert exc.value.code == 128 + signum  # exit status like a process killed by the signal
    assert signal.getsignal(signum) == handler_before  # handlers restored after the run
    # Signalled inside step 5's accumulation window → saved once step 5's optimizer step was done, not before.
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False, map_location="cpu")
    assert ckpt["global_step"] == 5
    assert not (run_dir / "metrics.json").exists()  # the interrupted attempt reports no result
    (record,) = json.loads((run_dir / RECORD_FILE).read_text())
    assert record["step"] == 5 and record["signal"] == signal.Signals(signum).name
    assert record["requeued"] is False  # not under SLURM: nothing to requeue
    assert record["from_step"] == 0 and 0 < record["train_s"] < time.time() - started  # this attempt's pace

    # Same command, same run dir, ckpt_path=null: resumes by itself and finishes the run.
    assert auto_resume_ckpt(run_dir) == str(run_dir / "checkpoints" / "last.ckpt")
    resumed = _run(run_dir)
    assert resumed["steps"] == straight["steps"] == STEPS
    for key in ("train/loss_first", "train/loss_last10", "train/loss_last", "val/loss"):
        assert resumed[key] == pytest.approx(straight[key], rel=0, abs=1e-5), key


def test_fresh_run_dir_does_not_auto_resume(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SLURM_RESTART_COUNT", raising=False)
    (tmp_path / "checkpoints").mkdir()
    atomic_torch_save({"global_step": 1}, tmp_path / "checkpoints" / "last.ckpt")
    assert auto_resume_ckpt(tmp_path) is None  # a checkpoint alone is not a reason to resume
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")  # a requeued SLURM attempt (e.g. node failure, no record)
    assert auto_resume_ckpt(tmp_path) == str(tmp_path / "checkpoints" / "last.ckpt")


def test_unknown_signal_name_is_one_clear_error() -> None:
    with pytest.raises(ValueError, match="unknown signal 'SIGFOO'.*SIGUSR1"):
        PreemptionCheckpoint(signals=["SIGFOO"])


def test_wandb_run_id_is_kept_with_the_checkpoints(tmp_path: Path) -> None:
    """A fresh run writes its id beside its checkpoints; a requeued attempt, or a run resuming that checkpoint
    from another run dir, reuses it; an explicit id wins."""
    cfg = compose_cfg(["logger=wandb"], tmp_path / "a")
    first = pin_wandb_run_id(cfg, tmp_path / "a", None)
    assert first and cfg.logger.wandb.id == first
    assert (tmp_path / "a" / ID_FILE).read_text().strip() == first
    again = compose_cfg(["logger=wandb"], tmp_path / "a")  # requeue: same run dir, id null in the config
    assert pin_wandb_run_id(again, tmp_path / "a", str(tmp_path / "a" / "checkpoints" / "last.ckpt")) == first
    other = compose_cfg(["logger=wandb"], tmp_path / "b")  # ckpt_path=<run a>: continues run a's W&B run
    assert pin_wandb_run_id(other, tmp_path / "b", str(tmp_path / "a" / "checkpoints" / "last.ckpt")) == first
    fresh = compose_cfg(["logger=wandb"], tmp_path / "c")
    assert pin_wandb_run_id(fresh, tmp_path / "c", None) not in (None, first)
    explicit = compose_cfg(["logger=wandb", "logger.wandb.id=mine"], tmp_path / "a")
    assert pin_wandb_run_id(explicit, tmp_path / "a", None) == "mine"
    assert pin_wandb_run_id(compose_cfg([], tmp_path / "d"), tmp_path / "d", None) is None  # no W&B logger


@pytest.mark.heavy  # multi-minute on 2 cores: CI runs it (.ci/run), make test-heavy too
def test_sharded_fsdp_run_is_preempted_into_its_checkpoint_and_resumes(tmp_path: Path) -> None:
    """2-process FSDP2 run, SIGTERM to every process (what SLURM does to a job step): all ranks save one sharded
    (DCP) last.ckpt at the next step boundary and exit 143; the same command in the same run dir resumes it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env.update(TOKENSMITH_RUN_NAME="preempted", OMP_NUM_THREADS="1")
    cmd = [sys.executable, "train.py", "debug=smoke", "trainer.accelerator=cpu", "trainer.devices=2", "strategy=fsdp",
           "trainer.val_check_interval=20", "trainer.enable_progress_bar=false", f"paths.log_dir={tmp_path}",
           "callbacks.run_artifacts.sample_max_new_tokens=0"]
    run = tmp_path / "train" / "runs" / "preempted"
    proc = subprocess.Popen([*cmd, "trainer.max_steps=5000"], cwd=ROOT, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 180
        while not (run / "checkpoints" / "step000020.ckpt").is_dir():  # training is under way on both ranks
            assert proc.poll() is None and time.monotonic() < deadline, "run ended or stalled before step 20"
            time.sleep(0.1)
        os.killpg(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=120) == 128 + signal.SIGTERM, proc.stderr.read()[-3000:]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    (record,) = json.loads((run / RECORD_FILE).read_text())
    assert record["signal"] == "SIGTERM" and record["step"] >= 20
    assert (run / "checkpoints" / "last.ckpt" / ".metadata").is_file()  # sharded, complete (renamed into place)
    assert not (run / "metrics.json").exists()

    end = record["step"] + 10  # a short second attempt: only that it continues from the checkpoint matters here
    again = subprocess.run([*cmd, f"trainer.max_steps={end}"], cwd=ROOT, env=env, capture_output=True, text=True,
                           timeout=240)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"resuming from {run / 'checkpoints' / 'last.ckpt'}" in (run / "train.log").read_text()
    assert json.loads((run / "metrics.json").read_text())["steps"] == end


def _two_stage(run_dir: Path, signal_ft_step: int | None = None) -> dict:
    """The two-stage StochasTok recipe (pretrain 3 steps, fine-tune 6), tiny; optionally signalled in stage 2."""
    cfg = compose_cfg([
        "experiment=stochastok/langgame", "debug=smoke", "trainer.accelerator=cpu", "callbacks.progress_bar=null",
        "callbacks.run_artifacts.sample_max_new_tokens=0", "model.d_model=32", "model.n_layers=1",
        "trainer.max_steps=3", "trainer.val_check_interval=3", "finetune.trainer.max_steps=6",
        "finetune.trainer.val_check_interval=3", "finetune.callbacks.langgame_eval.n_per_game=4",
    ], run_dir)
    if signal_ft_step is not None:
        with open_dict(cfg):
            cfg.finetune.callbacks.signal_sender = {"_target_": f"{__name__}.SignalMidWindow",
                                                    "step": signal_ft_step, "signum": int(signal.SIGTERM)}
    return run_training(cfg)


def test_two_stage_run_preempted_in_stage_two_resumes_there(tmp_path: Path) -> None:
    """SIGTERM during fine-tuning: stage 2 checkpoints and exits; the same command in the same run dir restores
    the finished stage 1 (training nothing, its metrics kept) and continues stage 2 from step 5, ending where an
    uninterrupted two-stage run ends."""
    torch.set_num_threads(1)
    straight = _two_stage(tmp_path / "straight")
    run_dir = tmp_path / "preempted"
    with pytest.raises(Preempted):
        _two_stage(run_dir, signal_ft_step=5)  # signalled on stage 2's 5th batch (an even batch_idx: 4)
    (record,) = json.loads((run_dir / "finetune" / RECORD_FILE).read_text())
    assert record["step"] == 5 and not (run_dir / "finetune" / "metrics.json").exists()
    stage_one = json.loads((run_dir / "metrics.json").read_text())
    resumed = _two_stage(run_dir)
    assert {k: v for k, v in resumed.items() if not k.startswith("finetune/")} | {"wall_time_s": 0} == \
        stage_one | {"wall_time_s": 0}  # stage 1 was restored, not retrained or rewritten
    assert resumed["finetune/steps"] == straight["finetune/steps"] == 6
    for key in ("finetune/train/loss_last10", "finetune/val/loss", "train/loss_last10", "val/loss"):
        assert resumed[key] == pytest.approx(straight[key], rel=0, abs=1e-5), key
