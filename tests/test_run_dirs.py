"""Run directories never collide between launches and are shared by every rank of one launch."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from src.runtime import resolvers
from src.runtime.checkpoints import CheckpointNotFoundError, resolve_ckpt_path

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


def test_ckpt_last_prefers_own_run_then_newest(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    for name in ("a", "b"):
        (runs / name / "checkpoints").mkdir(parents=True)
        (runs / name / "checkpoints" / "last.ckpt").write_bytes(b"x")
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
