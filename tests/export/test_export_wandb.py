"""`--wandb-artifact`: the exported directory is logged as a W&B model artifact (offline: inside the run dir).

Runs in its own interpreter: W&B keeps a per-process service and puts its address in the environment, which would
leak into later tests of the same pytest worker (tests/test_wandb_logger.py needs a service of its own)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.helpers import ROOT

SCRIPT = """
import sys
from pathlib import Path
from src.export.wandb_artifact import log_model_artifact
run_dir, out = Path(sys.argv[1]), Path(sys.argv[2])
print(log_model_artifact(out, {"run_dir": str(run_dir), "kind": "full"}))
"""


def test_offline_run_holds_the_model_artifact(tmp_path: Path) -> None:
    run_dir, out = tmp_path / "runs" / "2026-01-01_00-00-00-abc", tmp_path / "hf"
    run_dir.mkdir(parents=True)
    out.mkdir()
    (out / "config.json").write_text('{"model_type": "llama"}')
    (out / "model.safetensors").write_bytes(b"\0" * 64)
    env = {**{k: v for k, v in os.environ.items() if k not in ("WANDB_SERVICE", "WANDB_DIR")},
           "WANDB_MODE": "offline", "WANDB_SILENT": "true", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(run_dir), str(out)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    name = proc.stdout.strip().splitlines()[-1]
    assert name == "model-2026-01-01_00-00-00-abc"
    (records,) = list((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))
    blob = records.read_bytes()
    assert name.encode() in blob and b"model.safetensors" in blob
