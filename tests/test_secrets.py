"""Security basics: a W&B key or HF token in the environment never reaches the run dir (config, command, logs,
W&B's offline files), and pretrained code paths never trust remote code unless the user sets it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.helpers import ROOT

SECRETS = {"WANDB_API_KEY": "local-fakewandbkey0123456789abcdef0123456789", "HF_TOKEN": "hf_FakeTokenForTheLeakTest42",
           "HUGGING_FACE_HUB_TOKEN": "hf_FakeTokenForTheLeakTest43"}


def test_no_secret_from_the_environment_lands_in_the_run_dir(tmp_path: Path) -> None:
    run = tmp_path / "run"
    env = {**os.environ, **SECRETS, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "train.py", "debug=smoke", "logger=wandb", "trainer.max_steps=2",
         "callbacks.progress_bar=null", "callbacks.run_artifacts.sample_max_new_tokens=0", f"hydra.run.dir={run}"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    files = [p for p in run.rglob("*") if p.is_file()]
    assert any("wandb" in p.parts for p in files)  # W&B wrote its offline run here: it was really searched
    for path in files:
        data = path.read_bytes()
        for name, value in SECRETS.items():
            assert value.encode() not in data, f"{name} leaked into {path.relative_to(run)}"
    for name, value in SECRETS.items():
        assert value not in proc.stdout + proc.stderr, f"{name} leaked into the console output"


def test_no_code_path_turns_trust_remote_code_on() -> None:
    offenders = [f"{p.relative_to(ROOT)}" for d in ("src", "conf", "scripts") for p in (ROOT / d).rglob("*")
                 if p.suffix in (".py", ".yaml") and "trust_remote_code=True" in p.read_text().replace(" ", "")]
    assert offenders == []
