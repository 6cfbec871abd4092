"""Crash safety, tested by killing: a real `python train.py` run is SIGKILLed mid-step, mid-checkpoint-write and
mid-validation, resumed with `ckpt_path=last`, and must end with exactly the metrics of an uninterrupted run.

Slow (about 2 minutes on 2 cores): `make test-slow PYTEST_ARGS=tests/test_crash_safety.py`; CI runs it.
`tests.distributed.Pace` slows the run and writes its phase to the run dir; the checkpoint writer pauses halfway
through each file (TOKENSMITH_TEST_SLOW_CHECKPOINT_WRITE) so a kill can land inside a write.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from src.runtime.checkpoint_io import SLOW_WRITE_ENV
from src.runtime.checkpoints import checkpoint_problem
from tests.distributed import ROOT

pytestmark = pytest.mark.slow

STEPS = 16
RUN = ["debug=smoke", f"trainer.max_steps={STEPS}", "trainer.val_check_interval=4", "trainer.limit_val_batches=3",
       "callbacks.progress_bar=null", "callbacks.run_artifacts.sample_max_new_tokens=0",
       "+callbacks.pace._target_=tests.distributed.Pace"]
COMPARED = ("steps", "train/loss_first", "train/loss_last10", "train/loss_last", "val/loss", "val/ppl")


def _env() -> dict[str, str]:
    return {**{k: v for k, v in os.environ.items() if k != "TOKENSMITH_RUN_NAME"}, "OMP_NUM_THREADS": "1",
            SLOW_WRITE_ENV: "0.4"}


def _start(run: Path, extra: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "train.py", *RUN, *extra, f"hydra.run.dir={run}"], cwd=ROOT,
                            env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _phase(run: Path) -> tuple[str, int]:
    try:
        name, step = (run / "phase").read_text().split()
        return name, int(step)
    except (FileNotFoundError, ValueError):
        return "", -1


def _writing(run: Path) -> bool:
    return any((run / "checkpoints").glob(".*.tmp*"))


WHEN: dict[str, Callable[[Path, int], bool]] = {  # kill as soon as this holds (after step `after`)
    "mid-step": lambda run, after: _phase(run) == ("train", after),
    "mid-checkpoint-write": lambda run, after: _writing(run) and _phase(run)[1] >= after,
    "mid-validation": lambda run, after: _phase(run)[0] == "val" and _phase(run)[1] >= after,
}


def _finish(run: Path) -> dict:
    """Resume (or start again when nothing was saved) until the run completes; its metrics.json."""
    extra = ["ckpt_path=last"] if (run / "checkpoints" / "last.ckpt").exists() else []
    proc = _start(run, extra)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    return json.loads((run / "metrics.json").read_text())


def test_sigkill_anywhere_then_resume_gives_the_uninterrupted_metrics(tmp_path: Path) -> None:
    reference = _finish(tmp_path / "uninterrupted")
    rng = random.Random(20261204)
    # The last trial kills the final validation (step 16), after the final checkpoint: the resumed fit has nothing to
    # train, so the runtime validates step 16 again (src/runtime/build.py) before metrics.json is written.
    trials = [("mid-step", rng.randrange(1, STEPS - 1)), ("mid-checkpoint-write", rng.choice([4, 8, 12])),
              ("mid-validation", rng.choice([4, 8, 12])), ("mid-step", rng.randrange(1, STEPS - 1)),
              ("mid-checkpoint-write", rng.choice([4, 8, 12])), ("mid-validation", STEPS)]
    for i, (where, after) in enumerate(trials):
        run = tmp_path / f"trial{i}"
        proc = _start(run, [])
        deadline = time.time() + 240
        while not WHEN[where](run, after) and proc.poll() is None and time.time() < deadline:
            time.sleep(0.01)
        assert proc.poll() is None, f"trial {i}: the run ended before reaching {where} after step {after}"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        # Every checkpoint a resume could pick is complete (a kill mid-write leaves only a hidden temp file).
        for ckpt in (run / "checkpoints").glob("*.ckpt") if (run / "checkpoints").is_dir() else []:
            assert checkpoint_problem(ckpt) is None, f"trial {i} ({where}): {ckpt.name} is incomplete"
        got = _finish(run)
        assert {k: got[k] for k in COMPARED} == {k: reference[k] for k in COMPARED}, f"trial {i}: {where}"


RECIPE = ["experiment=cdpo/arith", "debug=smoke", "callbacks.progress_bar=null",
          "callbacks.run_artifacts.sample_max_new_tokens=0", "+callbacks.pace._target_=tests.distributed.Pace"]


def _recipe(run: Path, extra: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "train.py", *RECIPE, *extra, f"hydra.run.dir={run}"], cwd=ROOT,
                            env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _comparable(metrics: dict) -> dict:
    """Everything but timings and throughput."""
    return {k: v for k, v in metrics.items() if "wall_time" not in k and "tokens_per_s" not in k}


def test_a_killed_recipe_rerun_skips_finished_stages_and_continues_the_interrupted_one(tmp_path: Path) -> None:
    """cDPO's recipe (experiment=cdpo/arith at smoke size) SIGKILLed inside its `positive` stage, then rerun with
    ckpt_path=<run dir>: the stages before are not redone and the final metrics equal an uninterrupted run's."""
    proc = _recipe(tmp_path / "uninterrupted", [])
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    reference = json.loads((tmp_path / "uninterrupted" / "metrics.json").read_text())

    run = tmp_path / "killed"
    proc = _recipe(run, [])
    deadline = time.time() + 240
    while _phase(run / "positive")[1] < 3 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    assert proc.poll() is None, "the recipe ended before its positive stage reached step 3"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (run / "positive" / "final.pt").exists() and (run / "positive" / "checkpoints" / "last.ckpt").exists()
    before = {s: (run / s / "final.pt").stat().st_mtime_ns for s in ("sft",)}
    samples = (run / "sample" / "samples.jsonl").stat().st_mtime_ns
    proc = _recipe(tmp_path / "rerun", [f"ckpt_path={run}"])
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    assert {s: (run / s / "final.pt").stat().st_mtime_ns for s in before} == before  # not retrained
    assert (run / "sample" / "samples.jsonl").stat().st_mtime_ns == samples  # not resampled
    assert _comparable(json.loads((run / "metrics.json").read_text())) == _comparable(reference)
