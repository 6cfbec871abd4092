"""Resolving `ckpt_path=` into a checkpoint file, with errors that name the fix."""

from __future__ import annotations

from pathlib import Path


class CheckpointNotFoundError(FileNotFoundError):
    pass


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
        if is_checkpoint(own):
            return str(own)
        candidates = sorted(Path(task_runs_dir).glob("*/checkpoints/last.ckpt"), key=lambda p: p.stat().st_mtime)
        if not candidates:
            raise CheckpointNotFoundError(
                f"ckpt_path=last: no checkpoints/last.ckpt under {task_runs_dir}/*/ — nothing to resume. "
                "Run without ckpt_path first, or pass ckpt_path=<run dir or .ckpt file>."
            )
        return str(candidates[-1])
    path = Path(ckpt_path)
    if path.is_dir() and not is_checkpoint(path):
        path = path / "checkpoints" / "last.ckpt" if (path / "checkpoints").is_dir() else path / "last.ckpt"
    if not is_checkpoint(path):
        raise CheckpointNotFoundError(
            f"ckpt_path={ckpt_path}: {path} does not exist. Pass a .ckpt file, a run directory "
            "(containing checkpoints/last.ckpt) or ckpt_path=last."
        )
    return str(path)
