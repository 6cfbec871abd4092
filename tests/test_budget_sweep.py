"""scripts/budget_sweep.py: jobs from swept overrides, stopped into checkpoints at the budget, continued next time."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT

_spec = importlib.util.spec_from_file_location("budget_sweep", ROOT / "scripts" / "budget_sweep.py")
budget_sweep = importlib.util.module_from_spec(_spec)
sys.modules["budget_sweep"] = budget_sweep  # its dataclasses look their module up there
_spec.loader.exec_module(budget_sweep)


def test_sweep_expands_every_combination_with_names_from_the_swept_values() -> None:
    jobs = budget_sweep.expand(["experiment=skillit/lego", "curriculum=random,skillit", "seed=1,2",
                                "data.mixture=[0.5,0.5],[1,0]"])
    names = [name for name, _ in jobs]
    assert len(jobs) == 8 and len(set(names)) == 8
    assert names[0] == "curriculum-random_seed-1_mixture-0.5-0.5"
    assert jobs[0][1] == ["experiment=skillit/lego", "curriculum=random", "seed=1", "data.mixture=[0.5,0.5]"]
    assert jobs[-1][1][-1] == "data.mixture=[1,0]"  # a list value is one value, its commas included
    assert budget_sweep.expand(["seed=3"]) == [("job", ["seed=3"])]


@pytest.mark.parametrize("bad", [["seed"], ["seed=1,,2"], ["a=x-y,x_y"]])
def test_bad_sweeps_are_refused_with_one_message(bad: list[str]) -> None:
    with pytest.raises(SystemExit, match="error: "):
        budget_sweep.expand(bad)


def _sweep(tmp_path: Path, budget: int, max_steps: int) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env["OMP_NUM_THREADS"] = "1"
    cmd = [sys.executable, "scripts/budget_sweep.py", "--dir", str(tmp_path / "sweep"), "--budget", str(budget),
           "--poll", "0.2", "debug=smoke", "trainer.accelerator=cpu", "trainer.val_check_interval=10",
           "trainer.enable_progress_bar=false", "callbacks.run_artifacts.sample_max_new_tokens=0",
           f"trainer.max_steps={max_steps}", "seed=1"]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=400)


@pytest.mark.heavy  # multi-minute on 2 cores: CI runs it (.ci/run), make test-heavy too
def test_budget_stops_a_job_into_its_checkpoint_and_the_same_command_continues_it(tmp_path: Path) -> None:
    run = tmp_path / "sweep" / "job"
    first = _sweep(tmp_path, budget=45, max_steps=1_000_000)  # cannot finish: stopped at the budget
    assert first.returncode == 3, first.stdout + first.stderr
    assert "| job | stopped | 143 |" in first.stdout and "run the same command again" in first.stdout
    assert re.search(r"\| job \| stopped \| 143 \| \d+ \| \d+\.\d\d \|", first.stdout), first.stdout  # pace shown
    (record,) = json.loads((run / "preemptions.json").read_text())
    assert record["signal"] == "SIGTERM" and record["step"] > 0
    assert (run / "checkpoints" / "last.ckpt").is_file() and not (run / "metrics.json").exists()

    end = record["step"] + 5
    second = _sweep(tmp_path, budget=300, max_steps=end)
    assert second.returncode == 0, second.stdout + second.stderr + (tmp_path / "sweep" / "job.log").read_text()
    assert f"resuming from {run / 'checkpoints' / 'last.ckpt'}" in (run / "train.log").read_text()
    assert json.loads((run / "metrics.json").read_text())["steps"] == end

    log_size = (tmp_path / "sweep" / "job.log").stat().st_size
    third = _sweep(tmp_path, budget=300, max_steps=end)  # finished: nothing runs again
    assert third.returncode == 0 and "1 finished earlier, 0 to run" in third.stdout
    assert (tmp_path / "sweep" / "job.log").stat().st_size == log_size
    table = subprocess.run([sys.executable, "-m", "src.report", str(tmp_path / "sweep"), "--group", "seed",
                            "--metrics", "steps"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert f"| 1 | 1 | {end} (1) |" in table.stdout, table.stdout + table.stderr  # the sweep dir reads as one


def test_fit_steps_takes_the_slowest_pace_and_whole_rounds() -> None:
    spec = importlib.util.spec_from_file_location("fit_steps", ROOT / "scripts" / "offline_gpu" / "fit_steps.py")
    fit = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fit)
    assert fit.fit_steps([2.0, 1.6], 2000, 1500, 6000) == 3000  # 1.6 steps/s x 2000 s = 3200 -> 3000
    assert fit.fit_steps([10.0], 2000, 1500, 6000) == 6000  # capped at the paper's budget
    assert fit.fit_steps([0.5], 100, 1500, 6000) == 0 and fit.fit_steps([], 100, 1500, 6000) == 0
