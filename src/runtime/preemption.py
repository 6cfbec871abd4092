"""Preemption: a signal becomes a checkpoint at the next optimizer-step boundary, then the process exits (and, for a
time-limit warning, requeues its SLURM job). A restarted run in the same run directory resumes from it by itself.

Why the handler only sets a flag: a signal lands anywhere — inside backward, an all-reduce, a half-written
checkpoint. Saving from the handler (what Lightning's SLURM auto-requeue does) runs collectives re-entrantly and
snapshots a model whose gradients are half accumulated. At the next optimizer-step boundary the model, optimizer,
scheduler and data position (`samples_consumed`, docs/data.md) are consistent, so resuming there is exact.

Why the ranks vote: SLURM signals every task, but not at the same instant; one rank may see the flag a step
before another. Saving is collective (barriers, sharded state), so all ranks take the max of their flags at every
boundary and act together — one tiny all-reduce per optimizer step.

Who owns requeue: this callback, alone. Lightning's `SLURMEnvironment(auto_requeue=True)` (SIGUSR1) saves inside
the handler and raises on SIGTERM without a checkpoint; submitit's handler (SIGUSR2, sent `signal_delay_s` before
the time limit by the `--signal` its sbatch scripts carry) requeues and `sys.exit`s from inside the handler on
rank 0 only, also without a checkpoint. Both would fight over the same job. So `run.py` gives Lightning
`SLURMEnvironment(auto_requeue=False)` and `arm()` replaces submitit's (and Lightning's) handlers with ours for
SIGTERM, SIGUSR1 and SIGUSR2. What happens next depends on the signal:
- SIGTERM comes from SLURM killing the job (`scontrol requeue`, preemption, `scancel`): SLURM already decided
  whether the job comes back, so we only checkpoint and exit within `KillWait`.
- SIGUSR1/SIGUSR2 are time-limit warnings (`--signal=USR2@120`): nobody else will requeue, so global rank 0
  runs `scontrol requeue <job>` after the checkpoint is on disk. Outside SLURM we only checkpoint and exit.

The process exits with `Preempted` (a SystemExit, status 128 + signal): submitit then records no result for the
interrupted attempt, so a Hydra sweep waits for the requeued attempt's result instead of taking a half-run's.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback

from src.runtime.checkpoints import usable_checkpoint

log = logging.getLogger(__name__)

# Kept in the run dir: one entry per preemption (step, signal, requeued). Its presence also tells the next start
# in this run dir that the run was interrupted and must resume (see `auto_resume_ckpt`).
RECORD_FILE = "preemptions.json"
_NONE, _STOP, _REQUEUE = 0, 1, 2  # what the ranks vote for at a step boundary (max wins)


class Preempted(SystemExit):
    """Raised after the preemption checkpoint is on disk; ends the run without a result."""

    def __init__(self, signum: int, step: int, ckpt: Path) -> None:
        super().__init__(128 + signum)
        self.signum, self.step, self.ckpt = signum, step, ckpt

    def __str__(self) -> str:
        return f"preempted by {signal.Signals(self.signum).name}: checkpoint of step {self.step} at {self.ckpt}"


def _signum(name: str | int) -> signal.Signals:
    try:
        return signal.Signals(name) if isinstance(name, int) else signal.Signals[str(name).upper()]
    except (KeyError, ValueError):
        raise ValueError(
            f"callbacks.preemption: unknown signal {name!r}; use names like SIGTERM, SIGUSR1, SIGUSR2"
        ) from None


def slurm_job_id() -> str | None:
    """The id `scontrol requeue` takes: `<array job>_<task>` for array jobs (Hydra sweeps), else the job id."""
    array_job = os.environ.get("SLURM_ARRAY_JOB_ID")
    if array_job:
        return f"{array_job}_{os.environ.get('SLURM_ARRAY_TASK_ID', '0')}"
    return os.environ.get("SLURM_JOB_ID")


class PreemptionCheckpoint(Callback):
    """Signal → flag → checkpoint at the next optimizer-step boundary → (requeue) → exit. See the module docstring.

    Args:
        signals: signals treated as "stop soon" (defaults cover SLURM kills and both time-limit warnings).
        requeue_signals: the subset after which global rank 0 requeues its SLURM job itself.
        requeue: False = never call `scontrol requeue` (an outer scheduler restarts the job).
    """

    def __init__(
        self,
        signals: Sequence[str | int] = ("SIGTERM", "SIGUSR1", "SIGUSR2"),
        requeue_signals: Sequence[str | int] = ("SIGUSR1", "SIGUSR2"),
        requeue: bool = True,
    ) -> None:
        self.signals = [_signum(s) for s in signals]
        self.requeue_signals = {_signum(s) for s in requeue_signals}
        self.requeue = bool(requeue)
        self.received: int | None = None  # set by the handler; read at step boundaries
        self._previous: dict[int, Any] = {}
        self._last_step = -1
        self._attempt: tuple[int, float] = (0, time.time())  # (first step, wall time) of this attempt's training

    # ---- the handler: sets a flag, nothing else ----------------------------------------------------------
    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self.received is None:
            self.received = signum

    def arm(self) -> None:
        """Install the handler (replacing submitit's and Lightning's). Called by run.py before `fit` and again at
        train start, because Lightning installs its own SIGTERM handler right before the training loop."""
        if threading.current_thread() is not threading.main_thread():
            return  # Python only delivers signals to the main thread
        for s in self.signals:
            previous = signal.signal(s, self._on_signal)
            self._previous.setdefault(s, previous)

    def disarm(self) -> None:
        """Put back what `arm` replaced, where our handler is still the one installed (Lightning's teardown may
        already have restored the handlers it found, which were ours only if run.py armed before `fit`)."""
        if threading.current_thread() is not threading.main_thread():
            return
        for s, previous in self._previous.items():
            if signal.getsignal(s) == self._on_signal:
                signal.signal(s, previous if previous is not None else signal.SIG_DFL)
        self._previous = {}

    # ---- Lightning hooks ---------------------------------------------------------------------------------
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.arm()
        self._last_step = trainer.global_step
        self._attempt = (trainer.global_step, time.time())

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if trainer.global_step == self._last_step:
            return  # inside a gradient-accumulation window: not a step boundary
        self._last_step = trainer.global_step
        vote = _NONE if self.received is None else (_REQUEUE if self.received in self.requeue_signals else _STOP)
        vote_t = torch.tensor(vote, device=trainer.strategy.root_device)
        decided = int(trainer.strategy.reduce(vote_t, reduce_op="max").item())  # every rank, every step
        if decided == _NONE:
            return
        signum = self.received if self.received is not None else (
            signal.SIGUSR2 if decided == _REQUEUE else signal.SIGTERM)  # this rank saw no signal yet
        ckpt = self._save(trainer)
        requeued = False
        if trainer.is_global_zero:
            requeued = decided == _REQUEUE and self.requeue and self._requeue()
            self._record(trainer, signum, ckpt, requeued, self._attempt)
        trainer.strategy.barrier("preemption")
        log.warning("preempted by %s at step %d: saved %s%s", signal.Signals(signum).name, trainer.global_step,
                    ckpt, " and requeued the job" if requeued else "")
        raise Preempted(signum, trainer.global_step, ckpt)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.disarm()

    # ---- steps after the vote ----------------------------------------------------------------------------
    @staticmethod
    def _save(trainer: pl.Trainer) -> Path:
        """`checkpoints/last.ckpt`, written beside and renamed into place: a kill during the write (SLURM's
        KillWait) leaves the previous last.ckpt intact instead of a truncated one."""
        cb = trainer.checkpoint_callback
        ckpt_dir = Path(cb.dirpath) if cb is not None and getattr(cb, "dirpath", None) else (
            Path(trainer.default_root_dir) / "checkpoints")
        final = ckpt_dir / "last.ckpt"
        tmp = ckpt_dir / ".last.preempted.ckpt"
        trainer.save_checkpoint(tmp, weights_only=False)  # the full state (says so, no log); collective
        if trainer.is_global_zero:
            if tmp.is_dir():  # sharded strategies (DeepSpeed) save a directory
                shutil.rmtree(final, ignore_errors=True)
                if final.is_file() or final.is_symlink():
                    final.unlink()
            os.replace(tmp, final)
        return final

    @staticmethod
    def _requeue() -> bool:
        job = slurm_job_id()
        if job is None:
            log.info("preemption: not under SLURM, nothing to requeue")
            return False
        proc = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True, timeout=60)
        if proc.returncode != 0:
            log.error("scontrol requeue %s failed (%s): the checkpoint is saved; resubmit the job with the same run "
                      "dir to resume", job, proc.stderr.strip())
        return proc.returncode == 0

    @staticmethod
    def _record(trainer: pl.Trainer, signum: int, ckpt: Path, requeued: bool, attempt: tuple[int, float]) -> None:
        """One entry per preemption. `from_step` and `train_s` (this attempt's training, evaluations included,
        start-up and the checkpoint write not) give its pace, e.g. to size the next time limit."""
        path = Path(trainer.default_root_dir) / RECORD_FILE
        entries = json.loads(path.read_text()) if path.is_file() else []
        now = time.time()
        entries.append({"step": trainer.global_step, "signal": signal.Signals(signum).name, "checkpoint": str(ckpt),
                        "requeued": requeued, "slurm_job": slurm_job_id(), "time": now,
                        "from_step": attempt[0], "train_s": round(now - attempt[1], 3)})
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(entries, indent=2) + "\n")
        os.replace(tmp, path)


def find_preemption_callback(callbacks: Sequence[Callback]) -> PreemptionCheckpoint | None:
    return next((c for c in callbacks if isinstance(c, PreemptionCheckpoint)), None)


def cluster_plugins(callbacks: Sequence[Callback]) -> list[Any]:
    """Under SLURM with our callback present, Lightning's auto-requeue is switched off: one owner of requeue."""
    from lightning.fabric.plugins.environments import SLURMEnvironment

    if find_preemption_callback(callbacks) is None or not SLURMEnvironment.detect():
        return []
    return [SLURMEnvironment(auto_requeue=False)]


def auto_resume_ckpt(output_dir: str | Path, also: Sequence[str] = ()) -> str | None:
    """The checkpoint a restarted run continues from without being told (`ckpt_path=null`).

    Only a run that was interrupted resumes by itself: its run dir (or one of the sub-dirs `also`, e.g. a two-stage
    run's `finetune/`) holds a preemption record, or SLURM says this is a requeued attempt (`SLURM_RESTART_COUNT` >
    0, e.g. after a node failure that left no record). A fresh run dir never has a last.ckpt, so a new launch is
    unaffected.
    """
    out = Path(output_dir)
    ckpt = out / "checkpoints" / "last.ckpt"
    recorded = any((out / d / RECORD_FILE).is_file() for d in (".", *also))
    restarted = recorded or int(os.environ.get("SLURM_RESTART_COUNT", "0")) > 0
    if not (restarted and ckpt.exists()):
        return None
    usable = usable_checkpoint(ckpt)  # a kill mid-write: the newest complete checkpoint, with a warning
    return str(usable) if usable is not None else None
