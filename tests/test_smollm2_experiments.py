"""The SmolLM2 + LoRA experiments run from their one command: `debug=smoke` trains a few steps on a few questions
and writes the metrics that show learning in the full run (`heavy`: each loads the 135M model, 1-4 min; the cDPO
recipe loads it once per stage)."""

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


def test_grpo_smollm2_runs_chat_sft_then_grpo_on_chat_prompts(tmp_path: Path) -> None:
    small = ["finetune.data.batch_size=2", "finetune.method.num_generations=4", "finetune.method.max_new_tokens=12",
             "callbacks.arith_eval.max_new_tokens=12"]  # a smaller GRPO stage: the wiring is what is tested
    run = train_subprocess(tmp_path / "run", ["experiment=grpo/smollm2", *SMOKE, *small], timeout=900)
    metrics = json.loads((run / "metrics.json").read_text())
    assert {"arith/acc", "finetune/arith/acc", "finetune/train/reward_last10"} <= set(metrics)
    cfg = yaml.safe_load((run / "finetune" / "config_resolved.yaml").read_text())
    assert cfg["data"]["stage"] == "prompts_chat" and cfg["data"]["format"] == "prompt"
    assert cfg["model"]["lora"]["r"] == 16 and cfg["callbacks"]["arith_eval"]["chat"] is True
    assert cfg["method"]["optimizer"]["lr"] < 1e-3  # the GRPO stage's own lr, not the SFT stage's


def test_dpo_smollm2_runs_chat_sft_then_dpo_against_the_sft_model(tmp_path: Path) -> None:
    small = ["finetune.trainer.limit_val_batches=1", "callbacks.arith_eval.max_new_tokens=12"]
    run = train_subprocess(tmp_path / "run", ["experiment=dpo/smollm2", *SMOKE, *small], timeout=900)
    metrics = json.loads((run / "metrics.json").read_text())
    assert {"arith/acc", "finetune/arith/acc", "finetune/val/rewards/accuracy"} <= set(metrics)
    cfg = yaml.safe_load((run / "finetune" / "config_resolved.yaml").read_text())
    assert cfg["data"]["stage"] == "preference_chat" and cfg["data"]["format"] == "preference"
    assert cfg["method"]["reference"] == "copy"  # the SFT model, not the adapter-free base


def test_cdpo_smollm2_runs_every_stage_with_lora_and_skips_the_contrastive_models_decoding(tmp_path: Path) -> None:
    small = ["callbacks.arith_eval.max_new_tokens=12"]
    run = train_subprocess(tmp_path / "run", ["experiment=cdpo/smollm2", *SMOKE, *small], timeout=900)
    metrics = json.loads((run / "metrics.json").read_text())
    assert {"sft/arith/acc", "dpo/arith/acc", "cdpo/arith/acc", "score/hit_rate", "dpo/val/rewards/accuracy",
            "cdpo/val/rewards/accuracy", "select/pairs"} <= set(metrics)
    assert "positive/arith/acc" not in metrics  # recipe.contrastive.callbacks.arith_eval=null: no decoding there
    done = json.loads((run / "recipe.json").read_text())["done"]
    assert done == ["sft", "sample", "select", "positive", "negative", "score", "dpo", "cdpo"]
    pair = json.loads((run / "select" / "pairs.jsonl").read_text().splitlines()[0])
    assert pair["prompt"].startswith("<|im_start|>") and pair["prompt"].endswith("<|im_start|>assistant\n")
    assert pair["question"] in pair["prompt"] and "<|im_start|>" not in pair["question"]  # asked as chat, graded raw
    sft = yaml.safe_load((run / "sft" / "config_resolved.yaml").read_text())
    assert sft["data"]["stage"] == "sft_chat" and sft["callbacks"]["arith_eval"]["chat"] is True
    for arm, weighted in (("dpo", False), ("cdpo", True)):
        cfg = yaml.safe_load((run / arm / "config_resolved.yaml").read_text())
        assert cfg["model"]["lora"]["r"] == 16 and cfg["method"]["reference"] == "precomputed"
        assert cfg["data"]["format_options"]["token_weights"] is weighted
