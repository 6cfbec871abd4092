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


def _run_with_config(runs: Path, name: str, cfg: dict, mtime: float) -> Path:
    import yaml

    run = runs / name
    (run / "checkpoints").mkdir(parents=True)
    (run / "config_resolved.yaml").write_text(yaml.safe_dump(cfg))
    return _ckpt(run / "checkpoints" / "last.ckpt", 1, mtime)


def test_last_resumes_the_newest_run_of_this_config_not_of_the_task(tmp_path: Path) -> None:
    """plain, DPO and bf16-true runs share task_name `train`: `ckpt_path=last` must not pick another experiment's
    run (the README's bf16-true line followed by `ckpt_path=last` died in Lightning with KeyError: 'state')."""
    from src.runtime.checkpoints import CheckpointMismatchError

    runs = tmp_path / "runs"
    plain = {"seed": 1, "method": {"optimizer": {"_target_": "torch.optim.AdamW", "lr": 1e-3},
                                   "scheduler": {"total_steps": 100}},
             "trainer": {"precision": "32-true", "max_steps": 100}, "paths": {"output_dir": "a"}}
    bf16 = {**plain, "method": {"optimizer": {"_target_": "src.models.master_weights.master_weight_adamw",
                                              "lr": 1e-3}, "scheduler": {"total_steps": 100}},
            "trainer": {"precision": "bf16-true", "max_steps": 100}}
    older = _run_with_config(runs, "r1", plain, 1000)
    _run_with_config(runs, "r2", bf16, 2000)  # newer, another experiment
    # resuming to extend the run (max_steps and the scheduler's length follow) and from another dir still matches
    want = {**plain, "trainer": {"precision": "32-true", "max_steps": 300}, "paths": {"output_dir": "b"},
            "method": {**plain["method"], "scheduler": {"total_steps": 300}}}
    assert resolve_ckpt_path("last", tmp_path / "new", runs, config=want) == str(older)
    assert resolve_ckpt_path("last", tmp_path / "new", runs) != str(older)  # no config: the newest, as before
    only_bf16 = tmp_path / "only_bf16"
    _run_with_config(only_bf16, "r2", bf16, 2000)
    with pytest.raises(CheckpointMismatchError, match=r"r2, differs in 2 setting\(s\) \(method\.optimizer\._target_"
                       r": 'src\.models\.master_weights\.master_weight_adamw' -> 'torch\.optim\.AdamW'; "
                       r"trainer\.precision: 'bf16-true' -> '32-true'\)"):
        resolve_ckpt_path("last", tmp_path / "new", only_bf16, config=want)


def test_an_explicit_checkpoint_of_another_optimizer_is_one_error_naming_both(tmp_path: Path) -> None:
    from src.runtime.checkpoints import CheckpointMismatchError

    masters = {"method": {"optimizer": {"_target_": "src.models.master_weights.master_weight_adamw", "lr": 1e-3}}}
    ckpt = _run_with_config(tmp_path, "r1", masters, 1000)
    plain = {"method": {"optimizer": {"_target_": "torch.optim.AdamW", "lr": 3e-3}}}
    with pytest.raises(CheckpointMismatchError, match="master_weight_adamw, but this config builds torch.optim.AdamW"):
        resolve_ckpt_path(str(tmp_path / "r1"), tmp_path / "new", tmp_path, config=plain)
    # the same optimizer with another lr is a legitimate change on resume
    same = {"method": {"optimizer": {**masters["method"]["optimizer"], "lr": 3e-4}}}
    assert resolve_ckpt_path(str(ckpt), tmp_path / "new", tmp_path, config=same) == str(ckpt)


def test_a_checkpoint_is_streamed_to_disk_not_buffered_whole_in_memory(tmp_path: Path) -> None:
    """Atomicity comes from the rename; the old in-memory buffer cost a whole checkpoint of extra peak memory at
    every save. 40 MB of tensors must save with under 4 MB of Python memory (the buffer held all 40)."""
    import tracemalloc

    obj = {f"w{i}": torch.randn(256 * 1024) for i in range(40)}  # 40 MB
    tracemalloc.start()
    try:
        atomic_torch_save(obj, tmp_path / "a.ckpt")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4e6, f"{peak / 1e6:.1f} MB held while saving 40 MB"
    back = torch.load(tmp_path / "a.ckpt", weights_only=True)
    assert all(torch.equal(back[k], v) for k, v in obj.items())
    assert [p.name for p in tmp_path.iterdir()] == ["a.ckpt"]  # no temporary file left behind
