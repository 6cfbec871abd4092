"""A real single-node SLURM cluster (`-m slurm`; `.ci/run` runs it): a Hydra sweep through sbatch whose jobs are
2-task DDP runs, one of them preempted twice mid-training and requeued, must end exactly where its twin does.

Uses the cluster at $SLURM_CONF when one answers there (`.ci/run` starts one), else starts its own on spare
ports with scripts/slurm_cluster.sh (installing slurm-wlm if missing, as root) and stops only that one.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.helpers import ROOT

pytestmark = pytest.mark.slurm

STEPS = 300
VAL_EVERY = 25
FIRST_PREEMPT_AFTER = 25  # scontrol requeue once job 0 has passed this step ...
SECOND_PREEMPT_AFTER = 150  # ... and a time-limit warning (SIGUSR2) once its second attempt passed this one
SWEEP = [
    "--multirun", "hydra/launcher=slurm", "hydra.launcher.gpus_per_node=null", "hydra.launcher.timeout_min=15",
    "trainer.accelerator=cpu", "trainer.devices=2", "strategy=ddp", "logger=wandb", "callbacks.progress_bar=null",
    "model.d_model=32", "model.n_layers=1", "model.n_heads=2", "data.seq_len=32", "data.batch_size=4",
    f"trainer.max_steps={STEPS}", f"trainer.val_check_interval={VAL_EVERY}", "trainer.limit_val_batches=1",
    "task_name=slurm_test",
    # The two jobs differ only after training (greedy samples or none): job 1 is job 0's uninterrupted twin.
    "callbacks.run_artifacts.sample_max_new_tokens=0,4",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _answers(conf: str) -> bool:
    proc = subprocess.run(["sinfo", "-h", "-o", "%t"], env={**os.environ, "SLURM_CONF": conf},
                          capture_output=True, text=True, timeout=30)
    return proc.returncode == 0 and bool(re.search(r"^(idle|mix|alloc)", proc.stdout, re.M))


@pytest.fixture(scope="module")
def slurm_conf(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    existing = os.environ.get("SLURM_CONF")
    if existing and Path(existing).is_file() and _answers(existing):
        yield existing
        return
    state = tmp_path_factory.mktemp("slurm")
    env = {**os.environ, "SLURM_LOCAL_DIR": str(state), "SLURM_CTLD_PORT": str(_free_port()),
           "SLURMD_PORT": str(_free_port())}
    script = str(ROOT / "scripts" / "slurm_cluster.sh")
    start = subprocess.run([script, "start"], env=env, capture_output=True, text=True, timeout=300)
    try:
        assert start.returncode == 0, f"could not start a SLURM cluster:\n{start.stdout}\n{start.stderr}"
        yield str(state / "slurm.conf")
    finally:
        subprocess.run([script, "stop"], env=env, capture_output=True, timeout=120)


def _wait(what: str, cond: Callable[[], object], proc: subprocess.Popen, log: Path, timeout: float = 240) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        if proc.poll() is not None:
            pytest.fail(f"sweep exited ({proc.returncode}) while waiting for {what}:\n{log.read_text()[-4000:]}")
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}:\n{log.read_text()[-4000:]}")


def _start_now(job: str, scontrol: Callable[..., subprocess.CompletedProcess], proc: subprocess.Popen,
               log: Path) -> None:
    """SLURM holds a requeued job back for two minutes (reason BeginTime); a real cluster would too. Only to keep
    this test short, make it eligible at once when it is pending again."""
    _wait(f"{job} to be pending again", lambda: scontrol("squeue", "-h", "-j", job, "-o", "%T").stdout.strip()
          == "PENDING", proc, log)
    assert scontrol("scontrol", "update", f"JobId={job}", "StartTime=now").returncode == 0


def _max_ckpt_step(run_dir: Path) -> int:
    steps = [int(m.group(1)) for p in (run_dir / "checkpoints").glob("step*.ckpt")
             if (m := re.fullmatch(r"step(\d+)\.ckpt", p.name))]
    return max(steps, default=-1)


def _records(run_dir: Path) -> list[dict]:
    try:
        return json.loads((run_dir / "preemptions.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return []


def test_sweep_of_ddp_jobs_survives_preemption_and_requeue(slurm_conf: str, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_") and k != "TOKENSMITH_RUN_NAME"}
    env.update(SLURM_CONF=slurm_conf, WANDB_MODE="offline", OMP_NUM_THREADS="1", HYDRA_FULL_ERROR="1")
    log = tmp_path / "sweep.log"
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "train.py", *SWEEP, f"paths.log_dir={tmp_path}"], cwd=ROOT,
                                env=env, stdout=out, stderr=subprocess.STDOUT)
    array_task = ""
    scontrol = lambda *args: subprocess.run(args, env=env, capture_output=True, text=True, timeout=60)  # noqa: E731
    try:
        sweep = Path(_wait("the sweep dir", lambda: next((tmp_path / "slurm_test" / "multiruns").glob("*"), None),
                           proc, log))
        job0 = sweep / "0"
        array_task = _wait("job 0's submitit folder", lambda: next(
            (p.name for p in (sweep / ".submitit").glob("*_0") if p.is_dir()), None), proc, log)

        # 1) SLURM requeues the running job (as preemption would): SIGTERM to every task, SIGKILL after KillWait.
        _wait("job 0 to pass the first checkpoint", lambda: _max_ckpt_step(job0) >= FIRST_PREEMPT_AFTER, proc, log)
        assert scontrol("scontrol", "requeue", array_task).returncode == 0
        _wait("job 0's preemption checkpoint", lambda: len(_records(job0)) == 1, proc, log)
        _start_now(array_task, scontrol, proc, log)

        # 2) Time-limit warning (what `--signal=USR2@120` sends): the callback checkpoints and requeues itself.
        _wait("job 0's second attempt to pass step 150",
              lambda: _max_ckpt_step(job0) >= SECOND_PREEMPT_AFTER, proc, log)
        assert scontrol("scancel", "--signal=USR2", array_task).returncode == 0
        _wait("job 0's second preemption checkpoint", lambda: len(_records(job0)) == 2, proc, log)
        _start_now(array_task, scontrol, proc, log)

        assert proc.wait(timeout=300) == 0, log.read_text()[-4000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            if array_task:
                scontrol("scancel", array_task.split("_")[0])

    # Both jobs of the sweep finished, each a 2-rank DDP run, and returned their metrics.
    twin = sweep / "1"
    m0, m1 = (json.loads((d / "metrics.json").read_text()) for d in (job0, twin))
    assert m0["steps"] == m1["steps"] == STEPS
    assert (twin / "samples.txt").is_file() and not (job0 / "samples.txt").exists()  # the swept knob
    for rank in (0, 1):  # submitit's per-task logs: two srun tasks formed each job's DDP world
        task_log = (sweep / ".submitit" / array_task / f"{array_task}_{rank}_log.out").read_text()
        assert f"global_rank={rank}(2)" in task_log

    # Job 0 was preempted at the step boundaries after each signal and requeued (by SLURM, then by itself) ...
    first, second = _records(job0)
    assert first["signal"] == "SIGTERM" and not first["requeued"] and first["step"] >= FIRST_PREEMPT_AFTER
    assert second["signal"] == "SIGUSR2" and second["requeued"] and second["step"] >= SECOND_PREEMPT_AFTER
    assert first["slurm_job"] == second["slurm_job"] == array_task
    # ... each attempt resumed from the previous one's checkpoint, not from scratch ...
    rank0_log = (sweep / ".submitit" / array_task / f"{array_task}_0_log.out").read_text()
    assert rank0_log.count(f"resuming from {job0}/checkpoints/last.ckpt") == 2, rank0_log[-3000:]
    # ... and ended where the uninterrupted twin ended (fp32, same data stream, same reduction order).
    for key in ("train/loss_first", "train/loss_last10", "train/loss_last", "val/loss"):
        assert m0[key] == pytest.approx(m1[key], rel=0, abs=1e-6), key

    # One W&B run across the three attempts: every offline run dir carries the id kept in the run dir.
    run_id = (job0 / "wandb_run_id").read_text().strip()
    attempts = sorted((job0 / "wandb").glob("offline-run-*"))
    assert len(attempts) == 3 and all(p.name.endswith(f"-{run_id}") for p in attempts), attempts
    assert (twin / "wandb_run_id").read_text().strip() != run_id
