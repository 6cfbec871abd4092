"""Training the jobs of a study that have not finished: `train.py --multirun` per arm over its fresh seeds, one run
per seed that continues an interrupted job or starts from another arm's checkpoint.

Layout: `<out>/<arm>/seed_<s>/` is one run dir (Hydra's `.hydra/`, metrics.json, checkpoints); `<out>/logs/` holds
each launch's output; `<out>/study.json` records the study file and the overrides the jobs were trained with, so
that a later call with other overrides is refused instead of mixing two set-ups in one table.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from omegaconf import OmegaConf

from src.reproduce.study import Study, StudyError

ROOT = Path(__file__).resolve().parents[2]
FINETUNE_DIR = "finetune"  # a two-stage run's stage-2 dir and metric prefix (src/recipes/finetune.py's layout)


@dataclass
class Launch:
    """One call of train.py: an arm, the seeds it trains, and the command."""

    arm: str
    seeds: list[int]
    argv: list[str]


def job_dir(out: Path, arm: str, seed: int) -> Path:
    return out / arm / f"seed_{seed}"


def job_state(path: Path) -> str:
    """`done` (its last stage's metrics are in metrics.json), `interrupted` (a checkpoint, not done) or `new`.

    A two-stage job (`finetune:`, src/recipes/finetune.py) writes metrics.json after stage 1 already; it is done
    only once stage 2's `finetune/...` metrics are merged in, else a stopped stage 2 would count as a finished job.
    """
    metrics = path / "metrics.json"
    if metrics.is_file() and (not _two_stage(path) or any(
            k.startswith(f"{FINETUNE_DIR}/") for k in json.loads(metrics.read_text()))):
        return "done"
    ckpts = (path / "checkpoints" / "last.ckpt", path / FINETUNE_DIR / "checkpoints" / "last.ckpt")
    if any(c.is_file() for c in ckpts) or (path / "recipe.json").is_file():
        return "interrupted"
    return "new"


def _two_stage(path: Path) -> bool:
    """Whether the job's resolved config (written when it started) has a `finetune:` stage."""
    cfg = path / "config_resolved.yaml"
    return (path / FINETUNE_DIR).is_dir() or (cfg.is_file() and bool(OmegaConf.load(cfg).get(FINETUNE_DIR)))


def plan(study: Study, out: Path, seeds: list[int], extra: list[str], arms: list[str] | None = None
         ) -> list[Launch]:
    """The launches that finish every (arm, seed) job; arms started from another arm come after it."""
    base = [sys.executable, str(ROOT / "train.py")]
    order = [a for a in study.arms if a.from_arm is None] + [a for a in study.arms if a.from_arm is not None]
    launches: list[Launch] = []
    for arm in order:
        if (arms and arm.name not in arms) or arm.job is not None:  # a `job:` arm is trained by the arm it reads
            continue
        common = [f"experiment={arm.experiment}", *study.common, *arm.overrides, *extra]
        fresh = []
        for s in seeds:
            d = job_dir(out, arm.name, s)
            state = job_state(d)
            if state == "done":
                continue
            if state == "new" and arm.from_arm is None:
                fresh.append(s)
                continue
            # one run of its own: continue this job, or start it from the other arm's checkpoint of this seed
            ckpt = d if state == "interrupted" else job_dir(out, arm.from_arm, s) / "checkpoints" / "last.ckpt"
            launches.append(Launch(arm.name, [s], [*base, *common, f"seed={s}", f"hydra.run.dir={d}",
                                                   f"ckpt_path={ckpt}"]))
        if fresh:
            launches.append(Launch(arm.name, fresh, [
                *base, "--multirun", *common, "seed=" + ",".join(map(str, fresh)),
                f"hydra.sweep.dir={out / arm.name}", "hydra.sweep.subdir=seed_${seed}"]))
    return launches


def check_record(study: Study, out: Path, extra: list[str]) -> None:
    """Write `<out>/study.json` on first use; refuse a call whose overrides differ from the recorded ones."""
    record = out / "study.json"
    want = {"study": study.name, "common": study.common, "extra": extra,
            "arms": {a.name: {"experiment": a.experiment, "overrides": a.overrides} for a in study.arms}}
    if record.is_file():
        have = json.loads(record.read_text())
        if {k: have.get(k) for k in want} != want:
            raise StudyError(f"{out} holds jobs of another set-up (recorded in {record}: extra overrides "
                             f"{have.get('extra')}, now {extra}); pass --out <new dir> or the same overrides")
        return
    out.mkdir(parents=True, exist_ok=True)
    tmp = record.with_suffix(".tmp")
    tmp.write_text(json.dumps(want, indent=2))
    os.replace(tmp, record)


def run_launches(launches: list[Launch], out: Path) -> list[str]:
    """Run each launch, its output to `<out>/logs/`; one progress line per launch. Returns the failed ones."""
    failed = []
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    for i, launch in enumerate(launches, 1):
        log = logs / f"{launch.arm}_seed{'-'.join(map(str, launch.seeds))}.log"
        print(f"[{i}/{len(launches)}] {launch.arm} seeds {launch.seeds}: {shlex.join(launch.argv[1:])}", flush=True)
        start = time.monotonic()
        with log.open("a") as f:
            rc = subprocess.call(launch.argv, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT)
        took = time.monotonic() - start
        status = "done" if rc == 0 else f"FAILED (exit {rc})"
        print(f"    {status} in {took / 60:.1f} min; log: {log}", flush=True)
        if rc != 0:
            failed.append(f"{launch.arm} seeds {launch.seeds} (exit {rc}, {log})")
    return failed

