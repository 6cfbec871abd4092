"""Log an exported directory as a W&B model artifact (`--wandb-artifact`).

A short W&B run of job type `export` in the training run's project (its `logger.wandb.project`, else `tokensmith`)
logs the directory as an artifact of type `model`, named `model-<run dir name>` unless given, with the export
manifest as metadata. `WANDB_MODE=offline` works: the run and its artifact land in
`<training run dir>/wandb/offline-run-*/` (next to the training run's own W&B files) for a later `wandb sync`.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from src.export.errors import ExportError


def _project(run_dir: Path) -> str:
    from omegaconf import OmegaConf

    try:
        cfg = OmegaConf.load(run_dir / "config_resolved.yaml")
        for node in (cfg.get("logger") or {}).values():
            if node and "wandb" in str(node.get("_target_", "")).lower() and node.get("project"):
                return str(node.project)
    except Exception:  # the project name is a convenience; never fail the export over it
        pass
    return "tokensmith"


def log_model_artifact(out: str | Path, manifest: dict[str, Any], project: str | None = None,
                       name: str | None = None) -> str:
    """Log `out` as a model artifact; returns `<name>:<alias>` as W&B reports it (or the name, offline)."""
    try:
        import wandb
    except ImportError as err:  # pragma: no cover - wandb is a project dependency
        raise ExportError("--wandb-artifact needs the wandb package (pip install wandb)") from err
    out = Path(out)
    run_dir = Path(manifest["run_dir"])
    name = name or re.sub(r"[^A-Za-z0-9._-]", "-", f"model-{run_dir.name}")
    wandb_dir = os.environ.get("WANDB_DIR") or str(run_dir)
    try:
        run = wandb.init(project=project or _project(run_dir), job_type="export", dir=wandb_dir,
                         name=f"export-{run_dir.name}", config={"export": manifest})
        artifact = wandb.Artifact(name, type="model", metadata=manifest)
        artifact.add_dir(str(out))
        run.log_artifact(artifact)
        run.finish()
    except Exception as err:
        raise ExportError(f"{out} was exported, but logging it to W&B failed ({type(err).__name__}: {err}); log in "
                          "(wandb login), set WANDB_MODE=offline, or export without --wandb-artifact") from err
    return name
