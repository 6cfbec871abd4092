"""A LoRA run on the tiny HF Llama: the adapter (with its from-config base in <out>/base/) loads with peft, the
merged export loads with transformers alone; both give tokensmith's per-token log-probs and greedy tokens."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from src.export import export_model
from src.export.errors import ExportError
from tests.export.roundtrip import (
    assert_same,
    export_cli,
    held_out_batch,
    hf_check,
    left_padded_prompts,
    load_trained,
    tokensmith_numbers,
    train,
)

LORA = ["model=hf_llama_tiny", "model.model.num_hidden_layers=2",
        "model.lora={r:4,lora_alpha:8,target_modules:[q_proj,v_proj]}", "method.scheduler.warmup_steps=1",
        "method.optimizer.lr=0.02"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("lora") / "run"
    train(run_dir, LORA)
    return run_dir


def test_lora_adapter_and_merged_roundtrip(trained: Path, tmp_path: Path) -> None:
    adapter, merged = tmp_path / "adapter", tmp_path / "merged"
    proc = export_cli(trained, adapter)
    assert proc.returncode == 0, proc.stderr[-3000:]
    manifest = export_model(trained, merged, merge=True)
    assert manifest["kind"] == "merged_lora"

    names = {p.name for p in adapter.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "base", "tokenizer.json"} <= names
    full = {"config.json", "model.safetensors", "generation_config.json"}
    assert full <= {p.name for p in (adapter / "base").iterdir()}
    assert json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"] == str(
        (adapter / "base").resolve())
    assert full <= {p.name for p in merged.iterdir()}
    assert not [p for p in merged.rglob("*") if "lora" in p.name or p.suffix in (".bin", ".pt")]

    backbone, tok = load_trained(trained)
    batch, prompts = held_out_batch(trained, tok), left_padded_prompts(tok)
    result = hf_check(tmp_path, [
        {"name": "adapter", "model": str(adapter / "base"), "adapter": str(adapter), "tokenizer": str(adapter)},
        {"name": "merged", "model": str(merged), "tokenizer": str(merged)},
        {"name": "base", "model": str(adapter / "base"), "tokenizer": str(adapter)},
    ], batch, prompts)
    ours = tokensmith_numbers(backbone, tok, batch, prompts)
    deltas = {name: assert_same(ours, result[name], batch, tok) for name in ("adapter", "merged")}
    # the adapter matters: without it the log-probs are another model's
    scored = batch["labels"] != -100
    assert (ours["logp"] - result["base"]["logp"]).abs()[scored].max() > 1e-3
    print(f"max |Δ logp| LoRA: {deltas}")


def test_merge_without_lora_is_refused(trained: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    cfg = OmegaConf.load(trained / "config_resolved.yaml")
    cfg.model.lora = None
    OmegaConf.save(cfg, run / "config_resolved.yaml")
    (run / "checkpoints").mkdir()
    torch.save({"state_dict": {"backbone.x": torch.zeros(1)}}, run / "checkpoints" / "last.ckpt")
    with pytest.raises(ExportError, match="--merge"):
        export_model(run, tmp_path / "out", merge=True)
