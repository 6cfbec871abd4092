"""`strategy=` configs: each builds the strategy it names; DeepSpeed ones train on CPU (the loss falls); ZeRO
checkpoints resume (`ckpt_path=` accepts their directories) and convert to one plain file with one command.

Equivalence with DDP and resume = uninterrupted, on 2 processes, are in tests/test_invariants.py.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.strategies import DDPStrategy, ModelParallelStrategy

from src.runtime.build import build_strategy
from src.runtime.checkpoints import resolve_ckpt_path
from src.runtime.convert_checkpoint import NotAZeroCheckpointError, find_zero_checkpoint
from src.runtime.strategies import DeepSpeedAnyDeviceStrategy, FSDP2Strategy
from tests.distributed import ROOT, logged_train_losses, train_subprocess
from tests.helpers import compose_cfg

SMOKE = ["debug=smoke", "trainer.max_steps=2", "trainer.accelerator=cpu", "callbacks.progress_bar=null",
         "callbacks.run_artifacts.sample_max_new_tokens=0", "trainer.enable_progress_bar=false"]


# What each conf/strategy/*.yaml must build. ZeRO: (stage, offload to CPU, stage3_param_persistence_threshold).
ZERO = {"deepspeed_zero1": (1, False, None), "deepspeed_zero2": (2, False, None),
        "deepspeed_zero3": (3, False, 100000), "deepspeed_zero3_offload": (3, True, 100000)}
STRATEGY_CLASSES = {"auto": str, "ddp": DDPStrategy, "fsdp": FSDP2Strategy,
                    **dict.fromkeys(ZERO, DeepSpeedAnyDeviceStrategy)}
# docs/scaleout.md's override examples: they must reach the object too.
OVERRIDES = {"deepspeed_zero3": ["strategy.zero_config.stage3_param_persistence_threshold=0"],
             "fsdp": ["strategy.param_dtype=bf16", "strategy.reduce_dtype=fp32",
                      "strategy.reshard_after_forward=false", "strategy.save_distributed_checkpoint=false"]}
CASES = [(name, []) for name in sorted(STRATEGY_CLASSES)] + [(name, o) for name, o in OVERRIDES.items()]


def test_every_strategy_config_is_checked() -> None:
    assert set(STRATEGY_CLASSES) == {p.stem for p in (ROOT / "conf" / "strategy").glob("*.yaml")}


def _on_two_cpu_processes(strategy: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The strategy as a `trainer.accelerator=cpu trainer.devices=2` run sets it up, short of starting the process
    group (our set-up code runs; Lightning's, which would init torch.distributed, is skipped)."""
    monkeypatch.setattr(DDPStrategy, "setup_environment", lambda self: None)
    monkeypatch.setattr(ModelParallelStrategy, "setup_environment", lambda self: None)
    trainer = pl.Trainer(accelerator="cpu", devices=2, strategy=strategy, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)
    trainer.strategy.setup_environment()
    return trainer.strategy


@pytest.mark.parametrize(("name", "overrides"), CASES, ids=[" ".join([n, *o]) for n, o in CASES])
def test_strategy_configs_instantiate(name: str, overrides: list[str], run_dir: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Each strategy config builds the strategy its name promises, with the settings docs/scaleout.md describes,
    and on 2 CPU processes talks gloo over indexed devices."""
    strategy = build_strategy(compose_cfg([f"strategy={name}", *overrides], run_dir).strategy)
    assert type(strategy) is STRATEGY_CLASSES[name]
    if name == "auto":  # a name: Lightning picks one device, or DDP for several
        assert strategy == "auto"
        assert type(_on_two_cpu_processes(strategy, monkeypatch)) is DDPStrategy
        return
    assert strategy._process_group_backend is None  # null: nccl on GPU, gloo on CPU
    if name == "ddp":
        assert strategy._ddp_kwargs == {"find_unused_parameters": False}
    elif name == "fsdp":
        assert strategy._tensor_parallel_size == 1 and strategy._data_parallel_size == "auto"
        assert strategy.reshard_after_forward is (not overrides)
        assert strategy._save_distributed_checkpoint is (not overrides)
        assert strategy._dtypes == ({"param_dtype": torch.bfloat16, "reduce_dtype": torch.float32} if overrides
                                    else {"param_dtype": None, "reduce_dtype": None})
    else:
        stage, offload, persistence = ZERO[name]
        zero = strategy.config["zero_optimization"]
        assert zero["stage"] == stage
        assert zero.get("stage3_param_persistence_threshold") == (0 if overrides else persistence)
        if offload:  # parameters and optimizer states in CPU memory; torch AdamW accepted (not only DS CPU Adam)
            assert zero["offload_optimizer"]["device"] == zero["offload_param"]["device"] == "cpu"
            assert strategy.config["zero_force_ds_cpu_optimizer"] is False
        else:
            assert "offload_optimizer" not in zero and "offload_param" not in zero
            assert "zero_force_ds_cpu_optimizer" not in strategy.config

    on_cpu = _on_two_cpu_processes(strategy, monkeypatch)
    assert on_cpu is strategy and strategy.world_size == 2 and strategy._get_process_group_backend() == "gloo"
    if name in ZERO:  # DeepSpeed wants indexed devices, which Lightning's CPU accelerator does not hand out
        assert strategy.parallel_devices == [torch.device("cpu", 0), torch.device("cpu", 1)]
    if name == "fsdp":  # pure data parallelism: every rank of every node is one replica
        assert strategy._data_parallel_size == 2


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
    """ZeRO-1 and ZeRO-3 + CPU offload (not in the 2-process equivalence tests) train and save on a CPU.

    Without warmup the first update is a full AdamW step (lr 3e-3), which takes the loss from ~6.25 to ~5.68;
    with no update at all (lr 0) the second batch's loss is 6.252: a fall of 0.1 can only come from training."""
    run = train_subprocess(tmp_path / name, [*SMOKE, f"strategy={name}", "method.scheduler.warmup_steps=0"])
    ckpt = run / "checkpoints" / "last.ckpt"
    assert ckpt.is_dir() and (ckpt / "latest").is_file()
    assert (run / "metrics.json").is_file()
    losses = logged_train_losses(run)
    assert len(losses) == 2 and all(math.isfinite(x) for x in losses), losses
    assert losses[-1] < losses[0] - 0.1, losses


def _convert_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "src.runtime.convert_checkpoint", *args], cwd=ROOT,
                          env=dict(os.environ), capture_output=True, text=True, timeout=120)


@pytest.mark.heavy  # multi-minute on 2 cores: CI runs it (.ci/run), make test-heavy too
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
    assert metrics["steps"] == 2 and math.isfinite(metrics["train/loss_last"]) and math.isfinite(metrics["val/loss"])
    assert "###" in (run / "samples.txt").read_text()
