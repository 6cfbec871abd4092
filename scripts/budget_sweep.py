"""Run a sweep of `train.py` jobs side by side under a wall-clock budget; run it again to continue where it stopped.

    python scripts/budget_sweep.py --dir outputs/lego_smollm2 --budget 480 -- \
        experiment=skillit/lego_smollm2 curriculum=random,stratified,skillit seed=1,2,3 trainer.precision=bf16-mixed

Why not `train.py -m`: Hydra's basic launcher runs jobs one after another, and nothing in a multirun stops at a
deadline. This is for a machine held for a fixed time (a GPU lent for minutes, an interactive allocation) where
many small jobs should share it and whatever is unfinished at the deadline must be resumable:

- Every combination of the comma-separated overrides is one job, run in `<dir>/<job name>` (`hydra.run.dir`), the
  name made of the swept values (`curriculum-random_seed-1`). Up to `--parallel` jobs run at once.
- At the deadline each running job gets SIGTERM: the preemption callback (src/runtime/preemption.py) checkpoints at
  the next optimizer step and exits. The same command later resumes those jobs from their checkpoints (the run dir
  holds a preemption record, so `train.py` resumes by itself), skips finished ones (their run dir has
  metrics.json) and starts the rest.
- A job killed before it could checkpoint (a signal during start-up) starts again from scratch next time.

`<dir>` ends up with one run dir per job, the layout `scripts/skillit_results.py` reads. Exit status: 0 when every
job has finished, 3 when some were stopped at the deadline (run again), 1 when a job failed (its log is named).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PREEMPTED_EXIT = 128 + signal.SIGTERM  # what train.py exits with after its preemption checkpoint


def split_values(value: str) -> list[str]:
    """`a,b,[1,2]` -> ['a', 'b', '[1,2]']: commas inside brackets or quotes belong to the value."""
    out, depth, quote, cur = [], 0, "", ""
    for ch in value:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "[{(":
            depth += 1
        elif ch in "]})":
            depth -= 1
        elif ch == "," and depth == 0:
            out.append(cur)
            cur = ""
            continue
        cur += ch
    out.append(cur)
    return out


def expand(overrides: list[str]) -> list[tuple[str, list[str]]]:
    """Every combination of the swept overrides, as (job name, overrides), in command-line order."""
    axes: list[list[str]] = []
    swept: list[bool] = []
    for ov in overrides:
        if "=" not in ov:
            raise SystemExit(f"error: override {ov!r} has no '=' (expected key=value or key=v1,v2,...)")
        key, value = ov.split("=", 1)
        values = split_values(value)
        if any(v == "" for v in values):
            raise SystemExit(f"error: override {ov!r} has an empty value in its list")
        axes.append([f"{key}={v}" for v in values])
        swept.append(len(values) > 1)
    jobs = []
    for combo in itertools.product(*axes):
        parts = [_slug(ov) for ov, s in zip(combo, swept, strict=True) if s]
        jobs.append(("_".join(parts) or "job", list(combo)))
    names = [n for n, _ in jobs]
    if len(set(names)) != len(names):
        raise SystemExit("error: two jobs would share a run dir name; make the swept values distinct")
    return jobs


def _slug(override: str) -> str:
    key, value = override.split("=", 1)
    return f"{key.lstrip('+~').split('.')[-1]}-{re.sub(r'[^A-Za-z0-9.]+', '-', value).strip('-')}"


@dataclass
class Job:
    name: str
    overrides: list[str]
    run_dir: Path
    proc: subprocess.Popen | None = None
    state: str = "waiting"  # waiting | running | done | done earlier | stopped | failed
    rc: int | None = None
    log: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log = self.run_dir.parent / f"{self.name}.log"


def last_step(run_dir: Path) -> int | None:
    """The newest step the run is known to have reached: a finished run's `steps` (metrics.json), else the later of
    its last preemption checkpoint and the CSV metrics (flushed every few log intervals, so they can lag; a
    mixture's weights are logged at the step they apply from, which can be one past the end)."""
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        return int(json.loads((run_dir / "metrics.json").read_text())["steps"])
    steps: list[int] = []
    record = run_dir / "preemptions.json"
    if record.is_file():
        with contextlib.suppress(ValueError, KeyError, TypeError):  # being written now: the CSV still answers
            steps += [int(r["step"]) for r in json.loads(record.read_text())]
    for csv_file in run_dir.glob("csv/**/metrics.csv"):
        lines = csv_file.read_text().splitlines()
        head = lines[0].split(",") if lines else []
        if "step" in head:
            col = head.index("step")
            steps += [int(float(cells[col])) for cells in (row.split(",") for row in lines[1:])
                      if len(cells) > col and cells[col]]
    return max(steps) if steps else None


def pace(run_dir: Path) -> float | None:
    """Steps per second of the run's last stopped attempt (evaluations included; from its preemption record)."""
    record = run_dir / "preemptions.json"
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError, IndexError, ZeroDivisionError):
        last = json.loads(record.read_text())[-1]
        return (int(last["step"]) - int(last["from_step"])) / float(last["train_s"])
    return None


def launch(job: Job, python: str) -> None:
    job.run_dir.parent.mkdir(parents=True, exist_ok=True)
    cmd = [python, str(ROOT / "train.py"), *job.overrides, f"hydra.run.dir={job.run_dir}"]
    with open(job.log, "a") as log:
        log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(cmd)}\n")
        log.flush()
        # Own process group, so that a job past its grace period is killed with its dataloader workers.
        job.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    job.state = "running"


def finish(job: Job) -> None:
    job.rc = job.proc.returncode if job.proc else None
    if (job.run_dir / "metrics.json").is_file() and job.rc == 0:
        job.state = "done"
    elif job.rc == PREEMPTED_EXIT:
        job.state = "stopped"
    elif job.rc in (-signal.SIGTERM, -signal.SIGKILL, 128 + signal.SIGKILL):
        job.state = "stopped"  # killed before it could checkpoint (start-up) or after the grace period
    else:
        job.state = "failed"


def run(jobs: list[Job], budget_s: float, parallel: int, grace_s: float, python: str, poll_s: float) -> None:
    start = time.monotonic()
    deadline = start + budget_s
    queue = [j for j in jobs if j.state == "waiting"]
    stopping = False
    last_report = start
    while queue or any(j.state == "running" for j in jobs):
        now = time.monotonic()
        for job in jobs:
            if job.state == "running" and job.proc.poll() is not None:
                finish(job)
                print(f"[{now - start:6.0f} s] {job.name}: {job.state} (exit {job.rc})", flush=True)
        if now >= deadline and not stopping:
            stopping = True
            print(f"[{now - start:6.0f} s] budget reached: SIGTERM to running jobs (checkpoint, then exit)", flush=True)
            for job in jobs:
                if job.state == "running":  # the trainer only, as `timeout` would: workers end with it
                    job.proc.send_signal(signal.SIGTERM)
        if stopping and now >= deadline + grace_s:
            for job in jobs:
                if job.state == "running":
                    os.killpg(job.proc.pid, signal.SIGKILL)
        if not stopping:
            while queue and sum(j.state == "running" for j in jobs) < parallel:
                job = queue.pop(0)
                launch(job, python)
                print(f"[{now - start:6.0f} s] {job.name}: started (log {job.log})", flush=True)
        else:
            queue = []  # past the budget: jobs not started yet stay "waiting" for the next call
        if now - last_report >= 60:
            last_report = now
            steps = ", ".join(f"{j.name} {last_step(j.run_dir)}" for j in jobs if j.state == "running")
            print(f"[{now - start:6.0f} s] steps: {steps}", flush=True)
        time.sleep(poll_s)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--dir", type=Path, required=True, help="sweep directory: one run dir per job (reuse to resume)")
    ap.add_argument("--budget", type=float, required=True, help="seconds until running jobs are stopped")
    ap.add_argument("--parallel", type=int, default=0, help="jobs at once (default: all)")
    ap.add_argument("--grace", type=float, default=120.0, help="seconds a stopped job gets to checkpoint")
    ap.add_argument("--poll", type=float, default=1.0, help=argparse.SUPPRESS)
    ap.add_argument("overrides", nargs="+", help="train.py overrides; key=a,b,c sweeps")
    args = ap.parse_args(argv)
    sweep_dir = args.dir.resolve()
    jobs = [Job(name, ovs, sweep_dir / name) for name, ovs in expand(args.overrides)]
    for job in jobs:
        if (job.run_dir / "metrics.json").is_file():
            job.state = "done earlier"
    todo = sum(j.state == "waiting" for j in jobs)
    print(f"{len(jobs)} jobs in {sweep_dir}: {len(jobs) - todo} finished earlier, {todo} to run, "
          f"budget {args.budget:.0f} s", flush=True)
    run(jobs, args.budget, args.parallel or len(jobs), args.grace, sys.executable, args.poll)

    print("\n| job | state | exit | last step | steps/s when stopped |\n|---|---|---|---|---|")
    for job in jobs:
        rate = pace(job.run_dir) if job.state == "stopped" else None
        print(f"| {job.name} | {job.state} | {'' if job.rc is None else job.rc} | {last_step(job.run_dir)} | "
              f"{'' if rate is None else f'{rate:.2f}'} |")
    failed = [j for j in jobs if j.state == "failed"]
    for job in failed:
        print(f"error: {job.name} failed (exit {job.rc}); its log: {job.log}", file=sys.stderr)
    if failed:
        return 1
    if any(j.state in ("stopped", "waiting") for j in jobs):
        print("some jobs are unfinished: run the same command again to continue them")
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
