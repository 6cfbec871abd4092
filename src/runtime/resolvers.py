"""OmegaConf resolvers used by conf/. Registered on import (train.py and the tests import this module).

`ts.run_name` exists because `${now:...}` alone collides for two launches in the same second and, worse,
re-resolves per process: DDP ranks started by `srun` (or re-executed by Lightning) would each compute their
own timestamp and split one run over several directories. The name is computed once per process tree and
handed to child processes through the environment; under SLURM it is the job id, which every rank and every
requeue of the job shares, so a requeued job finds its own checkpoints again. A job that runs several `srun`
steps gets one name per step (`slurm-<job>.<step>` for steps 1, 2, ...; step ids start again at 0 when the job is
requeued, measured on the local cluster), so successive launches in one sbatch script never share a run dir.
Launches that are not their own step (two plain `python train.py` lines in one batch script) would share one;
`src.runtime.checkpoints.ensure_fresh_run_dir` refuses the second instead of letting it overwrite the first.
"""

from __future__ import annotations

import os
import secrets
from datetime import datetime
from pathlib import Path

from omegaconf import OmegaConf

RUN_NAME_ENV = "TOKENSMITH_RUN_NAME"
PROJECT_ROOT = Path(__file__).resolve().parents[2]


def run_name() -> str:
    """A directory name shared by every rank of one launch and unique across launches."""
    name = os.environ.get(RUN_NAME_ENV)
    if name:
        return name
    array_job = os.environ.get("SLURM_ARRAY_JOB_ID")
    job = os.environ.get("SLURM_JOB_ID")
    if array_job:
        name = f"slurm-{array_job}_{os.environ.get('SLURM_ARRAY_TASK_ID', '0')}"
    elif job:
        name = f"slurm-{job}"
    else:
        name = f"{datetime.now():%Y-%m-%d_%H-%M-%S}-{secrets.token_hex(3)}"
    step = os.environ.get("SLURM_STEP_ID", "")
    if job and step.isdigit() and int(step) > 0:  # srun steps 1, 2, ...; step 0 keeps the plain job name
        name = f"{name}.{step}"
    os.environ[RUN_NAME_ENV] = name
    return name


def register_resolvers() -> None:
    """Idempotent: Hydra's test helpers and multirun may import this more than once."""
    if not OmegaConf.has_resolver("ts.run_name"):
        OmegaConf.register_new_resolver("ts.run_name", run_name)
    if not OmegaConf.has_resolver("ts.root"):
        OmegaConf.register_new_resolver("ts.root", lambda: str(PROJECT_ROOT))
    if not OmegaConf.has_resolver("ts.mul"):
        OmegaConf.register_new_resolver("ts.mul", lambda *xs: _product(xs))
    if not OmegaConf.has_resolver("ts.every"):
        # ${ts.every:${trainer.max_steps},120}: an interval giving about n evaluations over the run (at least 1 step)
        OmegaConf.register_new_resolver("ts.every", lambda steps, n: max(1, int(steps) // int(n)))


def _product(xs: tuple) -> int | float:
    out = 1
    for x in xs:
        out *= x
    return out


register_resolvers()
