"""Atomic checkpoint files: a checkpoint is written beside its final name, flushed to disk, then renamed into place.

Why: Lightning writes through fsspec, whose local "transaction" stages the file in the system temp dir and then
moves it; when that dir is on another file system the move is a copy, so a SIGKILL (an OOM kill, a SLURM
KillWait ending, a laptop lid) in the middle leaves a truncated `last.ckpt` — and `ckpt_path=last` would pick
it. Here the temporary file sits in the checkpoint's own directory, so `os.replace` is one atomic rename: every
name under `checkpoints/` always points at a complete file (the previous one until the new one is whole).
Sharded checkpoints (DeepSpeed, FSDP2 directories) are written by their strategies and are not covered.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

# Tests only: seconds to pause halfway through writing a checkpoint, so that a kill lands mid-write.
SLOW_WRITE_ENV = "TOKENSMITH_TEST_SLOW_CHECKPOINT_WRITE"


class _PausingWriter:
    """A file's `write` that flushes and sleeps once, after the first chunk (tests only, SLOW_WRITE_ENV): a kill
    then lands with part of the checkpoint on disk."""

    def __init__(self, f: Any, pause: float) -> None:
        self.f, self.pause = f, pause

    def write(self, data: Any) -> int:
        n = self.f.write(data)
        if self.pause > 0:
            self.f.flush()
            time.sleep(self.pause)
            self.pause = 0.0
        return n

    def flush(self) -> None:
        self.f.flush()


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """torch.save `obj` to `path` through `.<name>.tmp<pid>` in the same directory, fsync, rename.

    The checkpoint is streamed into the temporary file, never held whole in memory: atomicity comes from the
    rename. (An in-memory buffer cost one whole checkpoint of extra peak memory at every save: parameters, a
    frozen reference copy and the optimizer state.)"""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    pause = float(os.environ.get(SLOW_WRITE_ENV, "0") or 0)
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, _PausingWriter(f, pause) if pause > 0 else f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    try:  # the rename itself is durable once the directory entry is
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:  # some file systems refuse fsync on directories; the rename is still atomic
        pass


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's TorchCheckpointIO with atomic saves (see the module docstring)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} does not take storage_options, got {storage_options!r}")
        atomic_torch_save(checkpoint, path)
