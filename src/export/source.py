"""What to export: the run's resolved config and the backbone weights of one checkpoint.

A run dir (`outputs/<task>/runs/<name>/`) holds `config_resolved.yaml` and `checkpoints/last.ckpt`; a checkpoint
file `<run dir>/checkpoints/<name>.ckpt` finds its config two levels up. Sharded checkpoints (a `<name>.ckpt/`
*directory* written by DeepSpeed ZeRO or FSDP2) are consolidated first by `src.runtime.convert_checkpoint`, into
a temporary file. Only the `backbone.` entries of the LightningModule's state dict are the model; anything else
(a frozen `reference.` policy, ...) is left out.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from src.export.errors import ExportError

CONFIG_FILE = "config_resolved.yaml"
LAST = Path("checkpoints") / "last.ckpt"
BACKBONE_PREFIX = "backbone."


@dataclass
class ExportSource:
    """The resolved inputs of one export."""

    run_dir: Path  # where config_resolved.yaml lives
    config_path: Path
    checkpoint: Path  # a file or a sharded directory
    sharded: str | None  # None, "zero" or "fsdp"


def _is_sharded_dir(path: Path) -> str | None:
    if path.is_dir() and (path / "latest").is_file():
        return "zero"
    if path.is_dir() and (path / ".metadata").is_file():
        return "fsdp"
    return None


def locate(path: str | Path, config: str | Path | None = None) -> ExportSource:
    """A run dir, a checkpoint file or a sharded checkpoint dir -> (run dir, config file, checkpoint)."""
    p = Path(path)
    if not p.exists():
        raise ExportError(f"{p} does not exist; pass a run directory (outputs/<task>/runs/<name>) or a .ckpt file")
    if p.is_dir() and _is_sharded_dir(p) is None:  # a run dir
        run_dir, ckpt = p, p / LAST
        if not ckpt.exists():
            found = sorted(q.name for q in (p / "checkpoints").glob("*.ckpt")) if (p / "checkpoints").is_dir() else []
            hint = (f"; it has {', '.join(found)}: pass one of them (e.g. {p / 'checkpoints' / found[-1]})" if found
                    else "; train until a checkpoint is saved (callbacks.model_checkpoint) or pass a .ckpt file")
            raise ExportError(f"{p}: no checkpoint at {ckpt}{hint}")
    else:  # <run dir>/checkpoints/<name>.ckpt (file or sharded dir)
        ckpt = p
        run_dir = p.parent.parent if p.parent.name == "checkpoints" else p.parent
    config_path = Path(config) if config is not None else run_dir / CONFIG_FILE
    if not config_path.is_file():
        raise ExportError(
            f"{config_path} not found: the export rebuilds the model and tokenizer from the run's resolved config; "
            f"pass the run directory, or --config <run dir>/{CONFIG_FILE}"
        )
    return ExportSource(run_dir, config_path, ckpt, _is_sharded_dir(ckpt) if ckpt.is_dir() else None)


def load_config(path: Path) -> Any:
    from omegaconf import OmegaConf

    try:
        cfg = OmegaConf.load(path)
    except Exception as err:  # a YAML error is the user's file
        raise ExportError(f"{path}: cannot read the config ({err})") from err
    if "model" not in cfg or "_target_" not in (cfg.model or {}):
        raise ExportError(f"{path}: no `model._target_` in this config; is it a tokensmith config_resolved.yaml?")
    return cfg


@contextlib.contextmanager
def consolidated(source: ExportSource, scratch_parent: Path) -> Iterator[Path]:
    """The checkpoint as one file: itself, or a temporary consolidation of a sharded dir (removed after)."""
    if source.sharded is None:
        yield source.checkpoint
        return
    _check_shards(source.checkpoint, source.sharded)
    scratch_parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=scratch_parent, prefix=".export-consolidate-") as tmp:
        from src.runtime.convert_checkpoint import convert

        out = Path(tmp) / "consolidated.ckpt"
        try:
            convert(source.checkpoint, out)
        except Exception as err:
            raise ExportError(
                f"{source.checkpoint}: could not consolidate this {source.sharded} sharded checkpoint "
                f"({type(err).__name__}: {err}). Every rank's shard must be present: copy the whole directory "
                "from the machine that trained it, or export another checkpoint of the run"
            ) from err
        yield out


def _check_shards(ckpt_dir: Path, kind: str) -> None:
    """Cheap completeness checks before the converter runs (its own errors are deep and library-specific)."""
    if kind == "zero":
        tag = (ckpt_dir / "latest").read_text().strip()
        tag_dir = ckpt_dir / tag
        models = sorted(tag_dir.glob("*model_states.pt")) if tag_dir.is_dir() else []
        optims = sorted(tag_dir.glob("*optim_states.pt")) if tag_dir.is_dir() else []
        if not models or not optims:
            raise ExportError(
                f"{ckpt_dir}: DeepSpeed checkpoint with missing shards (its `latest` names {tag_dir}, which holds "
                f"{len(models)} model-state and {len(optims)} optimizer-state files; both are needed). Copy the "
                "whole checkpoint directory from the machine that trained it, or export another checkpoint"
            )
    elif kind == "fsdp":
        shards = list(ckpt_dir.glob("*.distcp"))
        if not shards:
            raise ExportError(
                f"{ckpt_dir}: FSDP2 checkpoint with missing shards (a .metadata file but no *.distcp shard files). "
                "Copy the whole checkpoint directory from the machine that trained it, or export another checkpoint"
            )


def load_backbone_state(ckpt_file: Path, trusted: bool = False) -> tuple[dict[str, Any], dict[str, Any]]:
    """(backbone weights without the `backbone.` prefix, checkpoint metadata: step, epoch).

    `torch.load(weights_only=True)` reads every checkpoint this project writes (its RNG state is stored as
    bytes); `trusted` allows full unpickling, for files we consolidated ourselves.
    """
    import pickle

    import torch

    try:
        ckpt = torch.load(ckpt_file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if not trusted:
            raise ExportError(
                f"{ckpt_file}: this checkpoint holds Python objects beyond tensors, which a safe load refuses "
                f"({str(err).splitlines()[0]}). If you trust its origin, pass --trust-checkpoint"
            ) from err
        ckpt = torch.load(ckpt_file, map_location="cpu", weights_only=False)
    except Exception as err:
        raise ExportError(f"{ckpt_file}: not a readable PyTorch checkpoint ({type(err).__name__}: {err})") from err
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("state_dict"), dict):
        raise ExportError(f"{ckpt_file}: no `state_dict` in this file; is it a Lightning checkpoint of tokensmith?")
    state = {}
    for key, value in ckpt["state_dict"].items():
        if key.startswith(BACKBONE_PREFIX):
            state[key[len(BACKBONE_PREFIX):].replace("_orig_mod.", "")] = value  # torch.compile'd wrappers
    if not state:
        raise ExportError(
            f"{ckpt_file}: the checkpoint's state_dict has no `backbone.` weights (keys start with "
            f"{sorted({k.split('.')[0] for k in ckpt['state_dict']})}); export needs a tokensmith model checkpoint"
        )
    meta = {k: ckpt.get(k) for k in ("global_step", "epoch")}
    return state, meta
