"""The SmolLM2 + LoRA experiments run from their one command: `debug=smoke` trains a few steps on a few questions
and writes the metrics that show learning in the full run (`heavy`: each loads the 135M model, ~1 min)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.distributed import train_subprocess

pytestmark = pytest.mark.heavy
SMOKE = ["debug=smoke", "callbacks.progress_bar=null", "callbacks.run_artifacts.sample_max_new_tokens=0"]


def test_sft_smollm2_is_chat_sft_with_lora_scored_before_and_after(tmp_path: Path) -> None:
    run = train_subprocess(tmp_path / "run", ["experiment=sft/smollm2", *SMOKE], timeout=900)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["steps"] == 4 and {"arith/acc_start", "arith/acc"} <= set(metrics)
    cfg = yaml.safe_load((run / "config_resolved.yaml").read_text())
    assert cfg["data"]["stage"] == "sft_chat" and cfg["model"]["lora"]["r"] == 16
    assert cfg["callbacks"]["arith_eval"]["chat"] is True
