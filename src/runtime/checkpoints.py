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
from typing import Any

import yaml

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


# Keys that may differ between a run and its continuation: where it writes, how long it trains (resuming to extend
# max_steps is the common case, and the scheduler's length follows it), how it logs and reports.
RESUME_FREE = ("paths", "ckpt_path", "hydra", "callbacks", "logger", "tags", "optimized_metric", "trainer.max_steps",
               "trainer.default_root_dir",
               "trainer.val_check_interval", "trainer.log_every_n_steps", "trainer.enable_progress_bar",
               "method.scheduler.total_steps", "debug_steps", "eval_limit")


def _flat(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for k, v in node.items():
            out.update(_flat(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: node}


def config_differences(current: dict[str, Any], saved: dict[str, Any]) -> list[str]:
    """`key: saved -> current` for every training setting both configs hold with different values (the keys in
    RESUME_FREE and any `*cache_dir` left out: a continuation may change them). Keys only one side has are not
    compared: configs written by older versions of the code lack newer keys."""
    a, b = _flat(current), _flat(saved)
    return [f"{k}: {b[k]!r} -> {a[k]!r}" for k in sorted(set(a) & set(b))
            if a[k] != b[k] and not k.endswith("cache_dir")
            and not any(k == f or k.startswith(f + ".") for f in RESUME_FREE)]


def saved_form(cfg: Any) -> dict[str, Any] | None:
    """The config as config_resolved.yaml holds it (resolved, through YAML), for `config_differences`; None when it
    cannot be resolved here."""
    from omegaconf import OmegaConf

    try:
        loaded = yaml.safe_load(OmegaConf.to_yaml(cfg, resolve=True))
    except Exception:  # noqa: BLE001 - an interpolation that only resolves inside Hydra's main: compare nothing
        return None
    return loaded if isinstance(loaded, dict) else None


def _saved_config(run_dir: Path) -> dict[str, Any] | None:
    try:
        loaded = yaml.safe_load((run_dir / "config_resolved.yaml").read_text())
    except (OSError, yaml.YAMLError):
        return None
    return loaded if isinstance(loaded, dict) else None


def resolve_ckpt_path(ckpt_path: str | None, output_dir: str | Path, task_runs_dir: str | Path,
                      config: dict[str, Any] | None = None) -> str | None:
    """Turn the user's `ckpt_path` into a file.

    - None: fresh run.
    - "last": `<this run dir>/checkpoints/last.ckpt` if it exists (a requeued SLURM job keeps its run dir),
      else the most recently written `last.ckpt` among this task's runs *whose config matches* `config` (the
      composed config as a plain dict; `config_differences`): runs of one task name can be different experiments
      (plain, SFT, DPO, bf16-true ...), and resuming one of those with this config trains the wrong thing or fails
      deep in Lightning. When runs exist but none matches, one error names the newest and how it differs.
    - a run directory: its `checkpoints/last.ckpt`.
    - a file: itself.

    A run dir or file whose run was trained with another optimizer class is refused (`check_optimizer`).
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
        skipped: list[tuple[Path, list[str]]] = []
        for candidate in reversed(candidates):
            run_dir = candidate.parent.parent
            saved = _saved_config(run_dir) if config is not None else None
            diff = config_differences(config, saved) if config is not None and saved is not None else []
            if diff:
                skipped.append((run_dir, diff))
                continue
            usable = usable_checkpoint(candidate)
            if usable is not None:
                if skipped:
                    log.info("ckpt_path=last: skipped %d newer run(s) of another config; resuming %s",
                             len(skipped), run_dir)
                return str(usable)
        if skipped:
            run_dir, diff = skipped[0]
            shown = "; ".join(diff[:6]) + (f"; and {len(diff) - 6} more" if len(diff) > 6 else "")
            raise CheckpointMismatchError(
                f"ckpt_path=last: no run of this task under {task_runs_dir} was trained with this config; the "
                f"newest, {run_dir}, differs in {len(diff)} setting(s) ({shown}). Resume it with its own settings "
                f"(its config_resolved.yaml and .hydra/overrides.yaml), or start a new run without ckpt_path."
            )
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
    check_optimizer(path, config)
    return str(path)


def check_optimizer(path: Path, config: dict[str, Any] | None) -> None:
    """Refuse a resume whose optimizer class differs from the one that wrote the checkpoint (read from the run's
    config_resolved.yaml beside `checkpoints/`): Lightning would fail deep inside the optimizer's load_state_dict
    (`KeyError: 'state'` for fp32 master weights resumed with plain AdamW). Other settings may change on resume."""
    saved = _saved_config(path.parent.parent) if config is not None else None
    if saved is None or config is None:
        return
    key = "method.optimizer._target_"
    was, now = _flat(saved).get(key), _flat(config).get(key)
    if was is not None and now is not None and was != now:
        raise CheckpointMismatchError(
            f"checkpoint {path} holds the state of {key}={was}, but this config builds {now}; its state cannot "
            f"be restored into another optimizer. Resume with {key}={was} (the run's own settings are in "
            f"{path.parent.parent / 'config_resolved.yaml'}), or start a new run without ckpt_path."
        )
