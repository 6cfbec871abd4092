"""Compact transformer -> LlamaForCausalLM: a trained run exported by the CLI, and a tied-embedding variant,
loaded by plain transformers in a fresh process, give tokensmith's per-token log-probs and greedy tokens."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from src.export import export_model
from src.export.errors import ExportError
from src.models.components.transformer import CompactTransformer
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

# GQA, untied head, non-default RoPE theta and norm epsilon: each must be carried over exactly.
OVERRIDES = ["model.n_layers=2", "model.n_kv_heads=2", "model.rope_theta=500000.0", "model.norm_eps=1.0e-6"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("compact") / "run"
    train(run_dir, OVERRIDES)
    return run_dir


def _tied_variant(run_dir: Path, dst: Path) -> Path:
    """The same run with tied embeddings: random weights (norm gains too, so swapped norms would show)."""
    cfg = OmegaConf.load(run_dir / "config_resolved.yaml")
    cfg.model.tie_embeddings = True
    (dst / "checkpoints").mkdir(parents=True)
    OmegaConf.save(cfg, dst / "config_resolved.yaml")
    vocab = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]["backbone.embed.weight"]
    kwargs = {k: v for k, v in OmegaConf.to_container(cfg.model).items() if k not in ("_target_", "vocab_size")}
    torch.manual_seed(0)
    model = CompactTransformer(vocab_size=vocab.shape[0], **kwargs)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.uniform_(0.5, 1.5)
    state = {f"backbone.{k}": v for k, v in model.state_dict().items()}
    state["reference.embed.weight"] = torch.zeros(3, 3)  # other prefixes (a frozen reference policy) are ignored
    torch.save({"state_dict": state, "global_step": 0}, dst / "checkpoints" / "last.ckpt")
    return dst


def test_compact_roundtrip(trained: Path, tmp_path: Path) -> None:
    out = tmp_path / "hf"
    proc = export_cli(trained, out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    names = sorted(p.name for p in out.iterdir())
    for name in ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
                 "tokenizer_config.json", "tokensmith_export.json"):
        assert name in names
    assert not [n for n in names if n.endswith((".bin", ".pt", ".ckpt"))]
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"] and config["num_key_value_heads"] == 2
    assert config["rms_norm_eps"] == 1e-6 and config["tie_word_embeddings"] is False

    tied = _tied_variant(trained, tmp_path / "tied_run")
    export_model(tied, tmp_path / "hf_tied")
    assert json.loads((tmp_path / "hf_tied" / "config.json").read_text())["tie_word_embeddings"] is True

    backbone, tok = load_trained(trained)
    tied_backbone, _ = load_trained(tied)
    batch, prompts = held_out_batch(trained, tok), left_padded_prompts(tok)
    result = hf_check(tmp_path, [{"name": "untied", "model": str(out), "tokenizer": str(out)},
                                 {"name": "tied", "model": str(tmp_path / "hf_tied"),
                                  "tokenizer": str(tmp_path / "hf_tied")}], batch, prompts)
    deltas = {
        "untied": assert_same(tokensmith_numbers(backbone, tok, batch, prompts), result["untied"], batch, tok),
        "tied": assert_same(tokensmith_numbers(tied_backbone, tok, batch, prompts), result["tied"], batch, tok),
    }
    assert result["untied"]["special"]["eos_token"] == "<|endoftext|>"
    assert result["untied"]["special"]["pad_token"] == "<|pad|>"
    assert result["untied"]["special"]["mask_token"] == "<|mask|>"
    print(f"max |Δ logp| compact: {deltas}")


def test_bidirectional_model_is_refused(trained: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(trained, run, ignore=shutil.ignore_patterns("step*.ckpt", "csv", "*.png"))
    cfg = OmegaConf.load(run / "config_resolved.yaml")
    cfg.model.causal = False
    OmegaConf.save(cfg, run / "config_resolved.yaml")
    with pytest.raises(ExportError, match="bidirectional"):
        export_model(run, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_overwrite_replaces_and_a_failed_export_leaves_nothing(trained: Path, tmp_path: Path) -> None:
    out = tmp_path / "hf"
    out.mkdir()
    (out / "old.txt").write_text("old")
    export_model(trained, out, overwrite=True)
    assert not (out / "old.txt").exists() and (out / "model.safetensors").is_file()
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    # a checkpoint whose weights cannot be mapped fails while the model is being written
    run = tmp_path / "run"
    shutil.copytree(trained, run, ignore=shutil.ignore_patterns("step*.ckpt", "csv", "*.png"))
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    ckpt["state_dict"]["backbone.layers.0.attn.rotary.weight"] = torch.zeros(2)
    torch.save(ckpt, run / "checkpoints" / "last.ckpt")
    with pytest.raises(ExportError, match="no Llama counterpart"):
        export_model(run, out, overwrite=True)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # the previous export is untouched
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".hf.")]
