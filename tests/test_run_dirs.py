"""Run directories never collide between launches and are shared by every rank of one launch."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from src.runtime import resolvers
from src.runtime.checkpoint_io import atomic_torch_save
from src.runtime.checkpoints import CheckpointNotFoundError, RunDirTakenError, ensure_fresh_run_dir, resolve_ckpt_path

ROOT = Path(__file__).resolve().parents[1]


def _name_in_fresh_process(env: dict[str, str]) -> str:
    code = "import src.runtime.resolvers as r; print(r.run_name())"
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SLURM") and k != resolvers.RUN_NAME_ENV}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**clean, **env}, capture_output=True,
                         text=True, check=True)
    return out.stdout.strip()


def test_successive_launches_get_distinct_names() -> None:
    names = {_name_in_fresh_process({}) for _ in range(3)}
    assert len(names) == 3


def test_child_processes_inherit_the_launch_name() -> None:
    assert _name_in_fresh_process({resolvers.RUN_NAME_ENV: "abc"}) == "abc"


def test_slurm_ranks_share_the_job_id_name() -> None:
    a = _name_in_fresh_process({"SLURM_JOB_ID": "4242", "SLURM_PROCID": "0"})
    b = _name_in_fresh_process({"SLURM_JOB_ID": "4242", "SLURM_PROCID": "1"})
    assert a == b == "slurm-4242"


def test_srun_steps_of_one_job_get_their_own_run_dir() -> None:
    """Two `srun python train.py` lines in one sbatch script are steps 0 and 1; both ranks of a step share a name.
    Step ids restart at 0 when the job is requeued (checked on the local cluster), so the names are stable."""
    job = {"SLURM_JOB_ID": "4242"}
    assert _name_in_fresh_process(job) == "slurm-4242"  # the batch step itself has no SLURM_STEP_ID
    assert _name_in_fresh_process({**job, "SLURM_STEP_ID": "0"}) == "slurm-4242"
    ranks = {_name_in_fresh_process({**job, "SLURM_STEP_ID": "1", "SLURM_PROCID": r}) for r in ("0", "1")}
    assert ranks == {"slurm-4242.1"}
    array = {"SLURM_JOB_ID": "9", "SLURM_ARRAY_JOB_ID": "7", "SLURM_ARRAY_TASK_ID": "3", "SLURM_STEP_ID": "2"}
    assert _name_in_fresh_process(array) == "slurm-7_3.2"


def test_a_new_run_refuses_a_run_dir_that_holds_another_run(tmp_path: Path) -> None:
    import pytest

    ensure_fresh_run_dir(tmp_path / "new")  # missing dir: fine
    (tmp_path / "cfg_only").mkdir()
    (tmp_path / "cfg_only" / "config_resolved.yaml").write_text("x")
    ensure_fresh_run_dir(tmp_path / "cfg_only")  # a launch that died before training left nothing to lose
    for name in ("metrics.json", "checkpoints/last.ckpt"):
        run = tmp_path / name.replace("/", "_")
        (run / name).parent.mkdir(parents=True)
        (run / name).write_text("{}")
        with pytest.raises(RunDirTakenError, match=rf"already holds another run \({name}\).*ckpt_path=last.*srun"):
            ensure_fresh_run_dir(run)


def test_ckpt_last_prefers_own_run_then_newest(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    for name in ("a", "b"):
        (runs / name / "checkpoints").mkdir(parents=True)
        atomic_torch_save({"global_step": 1}, runs / name / "checkpoints" / "last.ckpt")
    os.utime(runs / "a" / "checkpoints" / "last.ckpt", (1, 1))
    assert resolve_ckpt_path("last", runs / "new", runs).endswith("b/checkpoints/last.ckpt")
    assert resolve_ckpt_path("last", runs / "a", runs).endswith("a/checkpoints/last.ckpt")
    assert resolve_ckpt_path(str(runs / "a"), runs / "new", runs).endswith("a/checkpoints/last.ckpt")
    assert resolve_ckpt_path(None, runs / "new", runs) is None


def test_ckpt_errors_name_the_fix(tmp_path: Path) -> None:
    import pytest

    with pytest.raises(CheckpointNotFoundError, match="Run without ckpt_path first"):
        resolve_ckpt_path("last", tmp_path / "new", tmp_path / "runs")
    with pytest.raises(CheckpointNotFoundError, match="does not exist"):
        resolve_ckpt_path(str(tmp_path / "nope.ckpt"), tmp_path / "new", tmp_path / "runs")
