"""Keep one W&B run per training run, across preemptions and requeues.

WandbLogger starts a new W&B run (new id) on every launch unless it is given `id`. A requeued job is a new launch
of the same training run, so its id must come from disk: we keep it in `<run dir>/wandb_run_id`, beside the
`checkpoints/` it belongs to (not inside: Lightning warns about foreign files there). Resuming from a checkpoint
(own run dir or another) continues the W&B run that wrote that checkpoint; a fresh run writes a new id before the
logger starts. Every rank computes the same id (the file is created once, atomically), though only rank 0 talks
to W&B.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from omegaconf import DictConfig, open_dict

ID_FILE = "wandb_run_id"
# Ours (survives a lost W&B service: src/runtime/wandb_logger.py) and Lightning's, for users who configure it.
WANDB_TARGETS = ("src.runtime.wandb_logger.WandbLogger", "lightning.pytorch.loggers.WandbLogger",
                 "lightning.pytorch.loggers.wandb.WandbLogger")


def wandb_logger_key(cfg: DictConfig) -> str | None:
    """The key under `logger` that configures a WandbLogger, if any."""
    for key, node in (cfg.get("logger") or {}).items():
        if node and node.get("_target_") in WANDB_TARGETS:
            return str(key)
    return None


def read_run_id(run_dir: Path) -> str | None:
    path = run_dir / ID_FILE
    return path.read_text().strip() or None if path.is_file() else None


def claim_run_id(run_dir: Path, run_id: str) -> str:
    """Write `run_id` unless an id is already there; return the id on disk. Safe when ranks race: the file
    appears complete or not at all (hard link of a finished temp file), and the first writer wins."""
    run_dir.mkdir(parents=True, exist_ok=True)
    final = run_dir / ID_FILE
    tmp = run_dir / f".{ID_FILE}.{os.getpid()}"
    tmp.write_text(run_id + "\n")
    try:
        os.link(tmp, final)
    except FileExistsError:
        pass
    finally:
        tmp.unlink(missing_ok=True)
    return final.read_text().strip()


def pin_wandb_run_id(cfg: DictConfig, output_dir: str | Path, ckpt: str | None) -> str | None:
    """Set `logger.<wandb>.id` (if W&B is configured and the user gave none) and return it.

    Order: the user's explicit id; the id already kept in this run dir (a requeued attempt); the id kept beside the
    checkpoint being resumed (resuming another run dir's checkpoint); a new random id.
    """
    key = wandb_logger_key(cfg)
    if key is None:
        return None
    node = cfg.logger[key]
    own_dir = Path(output_dir)
    explicit = node.get("id")
    if explicit:  # the user's choice wins, and is what a later resume of this run dir continues
        own_dir.mkdir(parents=True, exist_ok=True)
        (own_dir / ID_FILE).write_text(f"{explicit}\n")
        run_id = str(explicit)
    else:
        inherited = read_run_id(_run_dir_of(Path(ckpt))) if ckpt else None
        run_id = claim_run_id(own_dir, inherited or secrets.token_hex(4))
    with open_dict(node):
        node.id = run_id
    return run_id


def _run_dir_of(ckpt: Path) -> Path:
    """`<run dir>/checkpoints/last.ckpt` → `<run dir>`; a checkpoint kept elsewhere → its own folder."""
    return ckpt.parent.parent if ckpt.parent.name == "checkpoints" else ckpt.parent
