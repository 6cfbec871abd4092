"""Write the output directory all at once: a staging directory next to the target, renamed into place at the end.

A failed or interrupted export leaves no half-written model behind (the staging dir is removed on error; one left
by a killed process is named `.<out>.export-*` and never mistaken for a model). An existing non-empty target is
refused unless `overwrite`, and then replaced only after the new directory is complete.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from src.export.errors import ExportError

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
MANIFEST = "tokensmith_export.json"


def check_target(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise ExportError(f"{out} exists and is not a directory; choose another output path")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ExportError(f"{out} already exists and is not empty; pass --overwrite to replace it, or choose "
                          "another output directory")


@contextlib.contextmanager
def staged(out: Path, overwrite: bool) -> Iterator[Path]:
    """Yield an empty staging directory; on success it becomes `out` (atomically, for a new target)."""
    check_target(out, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.export-"))
    try:
        yield stage
        check_safetensors_only(stage)
        check_target(out, overwrite)  # nobody took it meanwhile
        _readable(stage)
        if out.exists():
            old = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.replaced-"))
            os.replace(out, old / out.name)
            os.replace(stage, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(stage, out)
    finally:
        if stage.exists():
            shutil.rmtree(stage, ignore_errors=True)


def _readable(stage: Path) -> None:
    """mkdtemp (and some writers) create owner-only files; a model directory gets the usual umask modes."""
    umask = os.umask(0)
    os.umask(umask)
    for p in [stage, *stage.rglob("*")]:
        p.chmod((0o777 if p.is_dir() else 0o666) & ~umask)


def check_safetensors_only(stage: Path) -> None:
    pickles = [p for p in stage.rglob("*") if p.suffix in PICKLE_SUFFIXES]
    if pickles:
        raise ExportError(f"internal: the export wrote pickled weights {pickles}; only safetensors are allowed")


def write_manifest(stage: Path, info: dict[str, Any]) -> None:
    """`tokensmith_export.json`: where the weights came from (run, checkpoint, step) and what was written."""
    (stage / MANIFEST).write_text(json.dumps(info, indent=2, sort_keys=True, default=str) + "\n")
