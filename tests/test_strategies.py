"""`strategy=` configs: each builds the strategy it names; DeepSpeed ones train on CPU; ZeRO checkpoints resume
(`ckpt_path=` accepts their directories) and convert to one plain file with one command.

Equivalence with DDP and resume = uninterrupted, on 2 processes, are in tests/test_invariants.py.
"""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from lightning.pytorch.strategies import DDPStrategy

from src.runtime.build import build_strategy
from src.runtime.checkpoints import resolve_ckpt_path
from src.runtime.convert_checkpoint import NotAZeroCheckpointError, find_zero_checkpoint
from src.runtime.strategies import DeepSpeedAnyDeviceStrategy
from tests.distributed import ROOT, train_subprocess
from tests.helpers import compose_cfg

SMOKE = ["debug=smoke", "trainer.max_steps=2", "trainer.accelerator=cpu", "callbacks.progress_bar=null",
         "callbacks.run_artifacts.sample_max_new_tokens=0", "trainer.enable_progress_bar=false"]


@pytest.mark.parametrize(
    ("name", "stage", "offload"),
    [("deepspeed_zero1", 1, False), ("deepspeed_zero2", 2, False), ("deepspeed_zero3", 3, False),
     ("deepspeed_zero3_offload", 3, True)],
)
def test_deepspeed_configs_build_the_stage_they_name(name: str, stage: int, offload: bool, run_dir: Path) -> None:
    strategy = build_strategy(compose_cfg([f"strategy={name}"], run_dir).strategy)
    assert isinstance(strategy, DeepSpeedAnyDeviceStrategy)
    zero = strategy.config["zero_optimization"]
    assert zero["stage"] == stage
    assert ("offload_optimizer" in zero and "offload_param" in zero) == offload
    if offload:  # our torch AdamW is accepted under offload (DeepSpeed otherwise demands its CPU Adam)
        assert strategy.config["zero_force_ds_cpu_optimizer"] is False
    if stage == 3:
        assert zero["stage3_param_persistence_threshold"] == 100000


def test_ddp_and_auto_configs_build_their_strategies(run_dir: Path) -> None:
    assert type(build_strategy(compose_cfg(["strategy=ddp"], run_dir).strategy)) is DDPStrategy
    assert build_strategy(compose_cfg(["strategy=auto"], run_dir).strategy) == "auto"


def test_zero_config_extends_a_config_file_and_names_a_missing_section(tmp_path: Path) -> None:
    cfg_file = tmp_path / "ds.json"
    cfg_file.write_text('{"zero_optimization": {"stage": 3}}')
    strategy = DeepSpeedAnyDeviceStrategy(config=str(cfg_file), zero_config={"stage3_param_persistence_threshold": 0})
    assert strategy.config["zero_optimization"] == {"stage": 3, "stage3_param_persistence_threshold": 0}
    cfg_file.write_text('{"train_micro_batch_size_per_gpu": 1}')
    with pytest.raises(ValueError, match="has none; set strategy.stage"):
        DeepSpeedAnyDeviceStrategy(config=str(cfg_file), zero_config={"stage3_param_persistence_threshold": 0})


@pytest.mark.parametrize("name", ["deepspeed_zero1", "deepspeed_zero3_offload"])
def test_other_deepspeed_stages_train_on_cpu(name: str, tmp_path: Path) -> None:
    """ZeRO-1 and ZeRO-3 + CPU offload (not in the 2-process equivalence tests) train and save on a CPU: every loss
    finite, and the loss falls (no warm-up, a fixed batch size: 6 steps at lr 3e-3 are plenty for a tiny model)."""
    run = train_subprocess(tmp_path / name, [*SMOKE, f"strategy={name}", "trainer.max_steps=6",
                                             "method.scheduler.warmup_steps=0"])
    ckpt = run / "checkpoints" / "last.ckpt"
    assert ckpt.is_dir() and (ckpt / "latest").is_file()
    rows = csv.DictReader((run / "csv" / "metrics.csv").read_text().splitlines())
    losses = [float(r["train/loss"]) for r in rows if r.get("train/loss")]
    assert len(losses) == 6 and all(math.isfinite(x) for x in losses)
    assert sum(losses[-2:]) / 2 < losses[0] - 0.1, losses
    assert json.loads((run / "metrics.json").read_text())["steps"] == 6


def _convert_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "src.runtime.convert_checkpoint", *args], cwd=ROOT,
                          env=dict(os.environ), capture_output=True, text=True, timeout=120)


def test_zero3_checkpoint_resumes_and_converts_with_one_command(tmp_path: Path) -> None:
    """A sharded ZeRO-3 checkpoint: `ckpt_path=<run dir>` resumes it, and the CLI writes a file whose state_dict
    holds every full-size weight (DeepSpeed's own shards hold 0-element placeholders)."""
    run = tmp_path / "z3"
    z3 = [*SMOKE, "strategy=deepspeed_zero3", "strategy.zero_config.stage3_param_persistence_threshold=0"]
    train_subprocess(run, z3)
    ckpt_dir = run / "checkpoints" / "last.ckpt"
    assert resolve_ckpt_path(str(run), run, tmp_path) == str(ckpt_dir)
    assert resolve_ckpt_path("last", run, tmp_path) == str(ckpt_dir)
    train_subprocess(run, [*z3, "trainer.max_steps=3", f"ckpt_path={run}"])  # resumes step 2 -> 3

    proc = _convert_cli(str(run))
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = run / "checkpoints" / "last.consolidated.ckpt"
    assert str(out) in proc.stdout
    ckpt = torch.load(out, map_location="cpu", weights_only=False)
    assert ckpt["global_step"] == 3
    shards = torch.load(next(ckpt_dir.glob("checkpoint/zero_pp_rank_0_*model_states.pt")), map_location="cpu",
                        weights_only=False)
    shapes = shards["param_shapes"][0]  # {name: full shape}
    assert all(shards["module"][name].numel() == 0 for name in shapes)  # really partitioned
    state = ckpt["state_dict"]
    assert {n: tuple(s) for n, s in shapes.items()} == {n: tuple(state[n].shape) for n in shapes}
    assert all(state[n].dtype == torch.float32 and torch.isfinite(state[n]).all() for n in shapes)


def test_convert_rejects_what_is_not_a_zero_checkpoint(tmp_path: Path) -> None:
    plain = tmp_path / "last.ckpt"
    torch.save({"state_dict": {}}, plain)
    with pytest.raises(NotAZeroCheckpointError, match="nothing to convert"):
        find_zero_checkpoint(plain)
    proc = _convert_cli(str(tmp_path / "nowhere"))
    assert proc.returncode == 2
    assert "no DeepSpeed ZeRO checkpoint here and no FSDP2 one" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("marker", ["latest", ".metadata"])  # DeepSpeed's shard directory, FSDP2's (DCP)
def test_last_resumes_its_own_sharded_checkpoint(marker: str, tmp_path: Path) -> None:
    """`ckpt_path=last` in a run dir whose last.ckpt is a shard directory resumes that directory, not the newest
    last.ckpt of another run (the fallback a requeued sharded run once took by mistake)."""
    own = tmp_path / "runs" / "a"
    (own / "checkpoints" / "last.ckpt").mkdir(parents=True)
    (own / "checkpoints" / "last.ckpt" / marker).write_text("")
    other = tmp_path / "runs" / "b" / "checkpoints"
    other.mkdir(parents=True)
    torch.save({}, other / "last.ckpt")  # newer, and a plain file
    assert resolve_ckpt_path("last", own, tmp_path / "runs") == str(own / "checkpoints" / "last.ckpt")
    assert resolve_ckpt_path(str(own), own, tmp_path / "runs") == str(own / "checkpoints" / "last.ckpt")


@pytest.mark.parametrize("precision", [[], ["strategy.param_dtype=bf16", "strategy.reduce_dtype=fp32"]],
                         ids=["fp32", "bf16-params"])
def test_fsdp_trains_a_hugging_face_backbone_and_generates(precision: list[str], tmp_path: Path) -> None:
    """strategy=fsdp on 2 CPU processes with the HF adapter (its decoder layers become the FSDP units), in fp32 and
    with FSDP2's mixed precision: trains, writes a sharded (DCP) checkpoint, and generates after training
    (generation gathers the sharded weights)."""
    run = train_subprocess(tmp_path / "fsdp_hf", [
        *SMOKE, "model=hf_llama_tiny", "strategy=fsdp", "trainer.devices=2", *precision,
        "callbacks.run_artifacts.sample_max_new_tokens=4"])
    assert (run / "checkpoints" / "last.ckpt" / ".metadata").is_file()
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["steps"] == 2 and math.isfinite(metrics["train/loss"]) and math.isfinite(metrics["val/loss"])
    assert "###" in (run / "samples.txt").read_text()
