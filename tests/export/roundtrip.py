"""Shared pieces of the export round-trip tests: a tiny trained run, tokensmith's own numbers, the fresh-process
check."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from src.models.components.generation import generate
from src.models.logprobs import batch_logprobs
from src.runtime.run import run_training
from tests.helpers import ROOT, compose_cfg

HF_CHECK = Path(__file__).with_name("hf_check.py")
TINY_RUN = [
    "debug=smoke", "trainer.accelerator=cpu", "trainer.max_steps=2", "trainer.val_check_interval=2",
    "trainer.limit_val_batches=1", "callbacks.progress_bar=null", "callbacks.run_artifacts.sample_max_new_tokens=0",
    "data.seq_len=64", "data.batch_size=4",
]
TEXTS = ["Tom went to the park.", "Once upon a time, a cat sat on a mat!", "<|endoftext|> 123 ünïcødé"]
PROMPTS = ["Tom went to", "Once upon a time", "The"]
MAX_NEW = 12


def train(run_dir: Path, overrides: list[str]) -> DictConfig:
    cfg = compose_cfg([*TINY_RUN, *overrides], run_dir)
    run_training(cfg)
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    return cfg


def saved_config(run_dir: Path) -> DictConfig:
    return OmegaConf.load(run_dir / "config_resolved.yaml")


def load_trained(run_dir: Path, ckpt: Path | None = None) -> tuple[Any, Any]:
    """(backbone with the checkpoint's weights, tokenizer), rebuilt the way training built them (not the exporter)."""
    cfg = saved_config(run_dir)
    tok = instantiate(cfg.data, _convert_="all").tokenizer
    sized = {"vocab_size": tok.vocab_size} if OmegaConf.is_missing(cfg.model, "vocab_size") else {}
    backbone = instantiate(cfg.model, **sized)
    state = torch.load(ckpt or run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    own = {k.removeprefix("backbone."): v for k, v in state["state_dict"].items() if k.startswith("backbone.")}
    backbone.load_state_dict(own, strict=True)
    return backbone.eval(), tok


def held_out_batch(run_dir: Path, tok: Any) -> dict[str, torch.Tensor]:
    """Validation rows (never trained on) as plain causal sequences; the last row right-padded."""
    cfg = saved_config(run_dir)
    dm = instantiate(cfg.data, _convert_="all")
    dm.prepare_data()
    dm.setup("fit")
    batch = next(iter(dm.val_dataloader()))
    ids = batch["input_ids"][:3, :48].clone()
    labels = torch.cat((ids[:, 1:], torch.full_like(ids[:, :1], -100)), dim=1)
    mask = torch.ones_like(ids)
    mask[-1, -10:] = 0
    ids[-1, -10:] = tok.pad_id
    labels[-1, -11:] = -100
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def left_padded_prompts(tok: Any) -> dict[str, torch.Tensor]:
    rows = [tok.encode(p) for p in PROMPTS]
    width = max(map(len, rows))
    ids = torch.tensor([[tok.pad_id] * (width - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    return {"input_ids": ids, "attention_mask": mask}


@torch.no_grad()
def tokensmith_numbers(backbone: Any, tok: Any, batch: dict, prompts: dict) -> dict[str, torch.Tensor]:
    logp = batch_logprobs(backbone, batch, kernel="reference").logp
    gen = generate(backbone, prompts["input_ids"], prompts["attention_mask"], max_new_tokens=MAX_NEW,
                   stop_token_ids=(tok.eos_id,), pad_token_id=tok.pad_id)
    return {"logp": logp, "generated": gen}


def hf_check(tmp: Path, jobs: list[dict], batch: dict, prompts: dict) -> dict[str, Any]:
    """Run hf_check.py in a fresh interpreter whose path holds no tokensmith (cwd and PYTHONPATH elsewhere)."""
    torch.save(batch, tmp / "batch.pt")
    torch.save(prompts, tmp / "prompts.pt")
    spec = {"batch": str(tmp / "batch.pt"), "prompts": str(tmp / "prompts.pt"), "texts": TEXTS,
            "max_new_tokens": MAX_NEW, "result": str(tmp / "result.pt"), "jobs": jobs}
    (tmp / "spec.json").write_text(json.dumps(spec))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, str(HF_CHECK), str(tmp / "spec.json")], cwd=tmp, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = torch.load(tmp / "result.pt", weights_only=False)
    assert result.pop("_src_imported") is False
    return result


def export_cli(*args: str | Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "src.export", *map(str, args)], cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT), **env}, capture_output=True, text=True,
                          timeout=300)


def assert_same(ours: dict, theirs: dict, batch: dict, tok: Any, atol: float = 1e-5) -> float:
    """Per-token log-probs within atol on every scored token, identical greedy tokens; returns max |Δ logp|."""
    scored = batch["labels"] != -100
    delta = (ours["logp"] - theirs["logp"]).abs()[scored].max().item()
    assert delta <= atol, f"max |Δ logp| = {delta}"
    assert torch.equal(ours["generated"], theirs["generated"]), (ours["generated"], theirs["generated"])
    assert theirs["ids"] == [tok.encode(t) for t in TEXTS]
    assert theirs["eos_id"] == tok.eos_id and theirs["pad_id"] == tok.pad_id
    return delta
