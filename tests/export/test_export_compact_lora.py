"""A LoRA run on the compact transformer exports merged (adapters and trained token rows folded into a plain
LlamaForCausalLM): plain transformers gives tokensmith's log-probs and greedy tokens. A bidirectional (mdlm) LoRA
run (compact or HF, model.causal=false) is refused with the one bidirectional message."""

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

LORA = ["model.n_layers=1", "model.d_model=64",
        "+model.lora={r:4,lora_alpha:8,trainable_token_indices:[5,6,7]}", "method.scheduler.warmup_steps=1",
        "method.optimizer.lr=0.02"]


def test_compact_lora_exports_merged(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    train(run_dir, LORA)
    out = tmp_path / "hf"
    proc = export_cli(run_dir, out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((out / "tokensmith_export.json").read_text())["kind"] == "merged_lora"
    assert not [p for p in out.rglob("*") if "adapter" in p.name or p.suffix in (".bin", ".pt")]

    backbone, tok = load_trained(run_dir)
    assert any(p.abs().max() > 0 for n, p in backbone.named_parameters() if "lora_B" in n)  # adapters trained
    batch, prompts = held_out_batch(run_dir, tok), left_padded_prompts(tok)
    result = hf_check(tmp_path, [{"name": "merged", "model": str(out), "tokenizer": str(out)}], batch, prompts)
    assert_same(tokensmith_numbers(backbone, tok, batch, prompts), result["merged"], batch, tok)


@pytest.mark.parametrize("target", ["src.models.components.transformer.CompactTransformer",
                                    "src.models.components.hf_adapter.HFBackbone"], ids=["compact", "hf"])
def test_bidirectional_lora_run_is_refused(tmp_path: Path, target: str) -> None:
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    OmegaConf.save({"model": {"_target_": target, "causal": False,
                              "lora": {"r": 4, "trainable_token_indices": "pads"}}}, run / "config_resolved.yaml")
    torch.save({"state_dict": {"backbone.x": torch.zeros(1)}}, run / "checkpoints" / "last.ckpt")
    for merge in (False, True):
        with pytest.raises(ExportError, match="bidirectional model"):
            export_model(run, tmp_path / f"out{merge}", merge=merge)
