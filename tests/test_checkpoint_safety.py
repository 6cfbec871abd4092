"""Checkpoint files are written atomically; a truncated or corrupted one is named, and `last` falls back to the
newest complete checkpoint with a warning."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from src.runtime.checkpoint_io import SLOW_WRITE_ENV, atomic_torch_save
from src.runtime.checkpoints import CorruptCheckpointError, checkpoint_problem, resolve_ckpt_path
from tests.helpers import ROOT


def _ckpt(path: Path, step: int, mtime: float) -> Path:
    atomic_torch_save({"global_step": step, "state_dict": {"w": torch.full((64,), float(step))}}, path)
    os.utime(path, (mtime, mtime))
    return path


def test_a_kill_mid_write_leaves_the_previous_file_whole(tmp_path: Path) -> None:
    target = tmp_path / "last.ckpt"
    atomic_torch_save({"global_step": 1}, target)
    code = ("import sys; from src.runtime.checkpoint_io import atomic_torch_save; import torch; "
            "atomic_torch_save({'global_step': 2, 'x': torch.zeros(100000)}, sys.argv[1])")
    proc = subprocess.Popen([sys.executable, "-c", code, str(target)], cwd=ROOT,
                            env={**os.environ, SLOW_WRITE_ENV: "30", "PYTHONPATH": str(ROOT)})
    deadline = time.time() + 60
    while not list(tmp_path.glob(".last.ckpt.tmp*")) and time.time() < deadline:  # half written, paused
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert list(tmp_path.glob(".last.ckpt.tmp*")), "the writer never reached the middle of its write"
    assert checkpoint_problem(target) is None
    assert torch.load(target, weights_only=True)["global_step"] == 1  # the old checkpoint, complete


def test_truncated_empty_and_foreign_files_are_named(tmp_path: Path) -> None:
    good = _ckpt(tmp_path / "a.ckpt", 1, 1000)
    data = good.read_bytes()
    (tmp_path / "half.ckpt").write_bytes(data[: len(data) // 2])
    (tmp_path / "empty.ckpt").write_bytes(b"")
    (tmp_path / "text.ckpt").write_text("not a checkpoint")
    flipped = bytearray(data)
    flipped[data.index(torch.ones(1).numpy().tobytes()) + 2] ^= 0xFF  # one flipped byte inside the tensor data
    (tmp_path / "flipped.ckpt").write_bytes(bytes(flipped))
    assert checkpoint_problem(good) is None
    assert "truncated" in checkpoint_problem(tmp_path / "half.ckpt")
    assert "empty" in checkpoint_problem(tmp_path / "empty.ckpt")
    assert "truncated or not a checkpoint" in checkpoint_problem(tmp_path / "text.ckpt")
    assert checkpoint_problem(tmp_path / "flipped.ckpt") is not None


def test_explicit_corrupted_checkpoint_is_one_error_naming_it_and_the_good_ones(tmp_path: Path) -> None:
    ckpts = tmp_path / "run" / "checkpoints"
    ckpts.mkdir(parents=True)
    good = _ckpt(ckpts / "step000002.ckpt", 2, 1000)
    bad = ckpts / "last.ckpt"
    bad.write_bytes(good.read_bytes()[:100])
    with pytest.raises(CorruptCheckpointError) as err:
        resolve_ckpt_path(str(bad), tmp_path / "run", tmp_path)
    assert str(bad) in str(err.value) and str(good) in str(err.value) and "truncated" in str(err.value)


def test_last_falls_back_to_the_newest_complete_checkpoint(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    run = tmp_path / "runs" / "r1"
    ckpts = run / "checkpoints"
    ckpts.mkdir(parents=True)
    _ckpt(ckpts / "step000002.ckpt", 2, 1000)
    newest = _ckpt(ckpts / "step000004.ckpt", 4, 2000)
    last = ckpts / "last.ckpt"
    last.write_bytes(newest.read_bytes()[:-50])  # truncated
    with caplog.at_level(logging.WARNING):
        got = resolve_ckpt_path("last", run, tmp_path / "runs")
    assert got == str(newest)
    assert "truncated" in caplog.text and str(newest) in caplog.text
