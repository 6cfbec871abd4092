"""Resolving `ckpt_path=` into a checkpoint file, with errors that name the fix.

A checkpoint file that is truncated or corrupted (a kill during a write made by something other than our atomic
writer, a full disk, a bad copy) is recognised before Lightning unpickles anything: `ckpt_path=<file>` names it
and the valid checkpoints beside it; `ckpt_path=last` and automatic resume fall back to the newest valid
checkpoint of the run with a warning.
"""

from __future__ import annotations

import logging
import zipfile
from pathlib import Path

log = logging.getLogger(__name__)


class CheckpointNotFoundError(FileNotFoundError):
    pass


class CorruptCheckpointError(ValueError):
    pass


class CheckpointMismatchError(ValueError):
    """The checkpoint's weights do not fit the model built from this config (another size or vocabulary)."""


def mismatch_message(ckpt: str, err: Exception) -> str:
    """One line from torch's load_state_dict error: the checkpoint, how many tensors differ, the first one."""
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    details = [ln for ln in lines if ln.startswith(("size mismatch", "Missing key", "Unexpected key"))]
    first = details[0] if details else lines[-1] if lines else str(err)
    return (f"checkpoint {ckpt} was written by a different model than this config builds ({len(details) or 1} "
            f"difference(s); first: {first[:300]}); resume with the model/data settings of the run that wrote it "
            "(its config_resolved.yaml), or start a new run without ckpt_path")


class RunDirTakenError(FileExistsError):
    pass


def ensure_fresh_run_dir(output_dir: str | Path) -> None:
    """Refuse to start a new run (no checkpoint to resume) in a run dir that already holds another run's results.

    Run names are unique per launch, so this only happens when two launches are given one name: a fixed
    `hydra.run.dir`, a reused `TOKENSMITH_RUN_NAME`, or two `python train.py` lines in one SLURM batch script that
    are not separate `srun` steps (both are named after the job id). Training on would overwrite the first run's
    last.ckpt and metrics.json; stopping costs nothing.
    """
    out = Path(output_dir)
    taken = [name for name in ("checkpoints/last.ckpt", "metrics.json") if (out / name).exists()]
    if taken:
        raise RunDirTakenError(
            f"run dir {out} already holds another run ({', '.join(taken)}); a new run would overwrite it. "
            "To continue that run pass ckpt_path=last; for a new run use a new directory (drop hydra.run.dir / "
            "TOKENSMITH_RUN_NAME, or set another); under SLURM start each launch of a batch script with its own "
            "`srun` (each step gets its own run dir, slurm-<job>.<step>)."
        )


def is_checkpoint(path: Path) -> bool:
    """A checkpoint file, or a directory of shards written in place of one: DeepSpeed's (it holds a `latest`
    file) or FSDP2's torch.distributed.checkpoint directory (it holds `.metadata`)."""
    return path.is_file() or (path.is_dir() and ((path / "latest").is_file() or (path / ".metadata").is_file()))


def checkpoint_problem(path: Path) -> str | None:
    """None when `path` is a complete checkpoint, else what is wrong with it. A file is checked as the zip archive
    torch.save writes (every entry's CRC, no unpickling); a sharded directory by its index file."""
    if path.is_dir():
        return None if is_checkpoint(path) else "is a directory without a sharded checkpoint's index"
    if not path.is_file():
        return "does not exist"
    if path.stat().st_size == 0:
        return "is empty (0 bytes)"
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
            if bad is not None:
                return f"is corrupted (its entry {bad} fails its checksum)"
            if not any(name.endswith("data.pkl") for name in archive.namelist()):
                return "is not a torch checkpoint (no data.pkl inside)"
    except (zipfile.BadZipFile, OSError) as err:
        return f"is truncated or not a checkpoint ({err})"
    return None


def valid_checkpoints(ckpt_dir: Path) -> list[Path]:
    """The complete checkpoints in a `checkpoints/` dir, newest first (last.ckpt first among equals)."""
    if not ckpt_dir.is_dir():
        return []
    found = [p for p in ckpt_dir.iterdir() if p.name.endswith(".ckpt") and not p.name.startswith(".")]
    found.sort(key=lambda p: (p.stat().st_mtime, p.name == "last.ckpt"), reverse=True)
    return [p for p in found if checkpoint_problem(p) is None]


def usable_checkpoint(path: Path) -> Path | None:
    """`path` if complete; else, with a warning, the newest complete checkpoint beside it; else None."""
    problem = checkpoint_problem(path)
    if problem is None:
        return path
    fallback = valid_checkpoints(path.parent)
    if fallback:
        log.warning("checkpoint %s %s; resuming from the newest complete one instead: %s", path, problem,
                    fallback[0])
        return fallback[0]
    log.warning("checkpoint %s %s, and no complete checkpoint is beside it", path, problem)
    return None


def resolve_ckpt_path(ckpt_path: str | None, output_dir: str | Path, task_runs_dir: str | Path) -> str | None:
    """Turn the user's `ckpt_path` into a file.

    - None: fresh run.
    - "last": `<this run dir>/checkpoints/last.ckpt` if it exists (a requeued SLURM job keeps its run dir),
      else the most recently written `last.ckpt` among this task's runs.
    - a run directory: its `checkpoints/last.ckpt`.
    - a file: itself.
    """
    if ckpt_path in (None, "", "null"):
        return None
    if ckpt_path == "last":
        own = Path(output_dir) / "checkpoints" / "last.ckpt"
        if own.exists():
            usable = usable_checkpoint(own)
            if usable is not None:
                return str(usable)
        candidates = sorted(Path(task_runs_dir).glob("*/checkpoints/last.ckpt"), key=lambda p: p.stat().st_mtime)
        for candidate in reversed(candidates):
            usable = usable_checkpoint(candidate)
            if usable is not None:
                return str(usable)
        raise CheckpointNotFoundError(
            f"ckpt_path=last: no complete checkpoints/last.ckpt under {task_runs_dir}/*/ — nothing to resume. "
            "Run without ckpt_path first, or pass ckpt_path=<run dir or .ckpt file>."
        )
    path = Path(ckpt_path)
    if path.is_dir() and not is_checkpoint(path):
        path = path / "checkpoints" / "last.ckpt" if (path / "checkpoints").is_dir() else path / "last.ckpt"
    if not is_checkpoint(path):
        raise CheckpointNotFoundError(
            f"ckpt_path={ckpt_path}: {path} does not exist. Pass a .ckpt file, a run directory "
            "(containing checkpoints/last.ckpt) or ckpt_path=last."
        )
    problem = checkpoint_problem(path)
    if problem is not None:
        others = [str(p) for p in valid_checkpoints(path.parent) if p != path]
        hint = f"resume from one of the complete ones beside it: {', '.join(others[:3])}" if others else (
            "no complete checkpoint is beside it; start a new run")
        raise CorruptCheckpointError(f"ckpt_path={ckpt_path}: checkpoint {path} {problem}; {hint}")
    return str(path)
