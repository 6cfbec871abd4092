"""Every benchmark and script that has no test of its own runs end to end at a toy size and prints its table: a
figure in docs/benchmarks.md or docs/results.md must come from a command that still works (the throughput
benchmark crashed at `--steps 1` before this test: its Lightning mode timed one step fewer than asked)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT

pytestmark = pytest.mark.slow  # ~30 s together: subprocesses that import torch and Lightning


def _run(args: list[str]) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_train_throughput_bench(tmp_path: Path) -> None:
    out = tmp_path / "tt.json"
    text = _run(["bench/train_throughput.py", "--d", "32", "--layers", "1", "--heads", "2", "--seq", "16", "--batch",
                 "2", "--vocab", "64", "--steps", "1", "--rounds", "1", "--out", str(out)])
    assert "| tokensmith |" in text and "| hf_llama |" in text
    rows = json.loads(out.read_text())["rows"]
    assert [r["steps"] for r in rows] == [1, 1, 1, 1]  # every mode timed the steps asked for, one round


def test_mdlm_sampler_bench() -> None:
    text = _run(["bench/mdlm_sampler.py", "--canvases", "8", "--sample-batch", "1", "--d", "16", "--layers", "1",
                 "--heads", "2", "--vocab", "32", "--batch", "2", "--seq", "16", "--repeats", "1"])
    assert "| mdlm (bidirectional) |" in text and "| causal LM |" in text


def test_rollout_bench() -> None:
    text = _run(["bench/rollout.py", "--rows", "2", "--new", "4", "--prompt-len", "2,4", "--d-model", "16", "--layers",
                 "1", "--heads", "2", "--vocab", "32", "--reps", "1"])
    assert "KV cache tok/s" in text and "| 2 |" in text


def test_lego_recall_pilot_script() -> None:
    text = _run(["scripts/lego_recall_pilot.py", "--pretrain-steps", "2", "--lego-steps", "2", "--n-layers", "1"])
    assert "recall step      2" in text and "lego step      2" in text


def test_sweep_table_is_src_report() -> None:
    assert "python -m src.report" in _run(["scripts/sweep_table.py", "--help"])


def test_checkpoint_memory_bench_on_smollm2() -> None:
    """One DPO step of SmolLM2 with and without saving (~1 min: the model loads twice); the TRL row is skipped."""
    text = _run(["bench/checkpoint_memory.py", "--steps", "1", "--batch", "1", "--seq", "32", "--pairs-n", "8",
                 "--skip-trl"])
    assert "| tokensmith, saving |" in text and "| tokensmith, no checkpoint | " in text


def test_kernels_bench(tmp_path: Path) -> None:
    text = _run(["bench/kernels.py", "--n", "16", "--v", "64", "--d", "8", "--impls", "reference,chunked", "--reps",
                 "1", "--out", str(tmp_path)])
    assert "| reference |" in text and "| chunked |" in text and "failed" not in text
    assert list(tmp_path.glob("kernels-cpu-*.json"))


def test_dpo_bench(tmp_path: Path) -> None:
    """Toy head sizes (d < 64 once divided by zero for the head count) and a result file outside the repository."""
    text = _run(["bench/dpo.py", "--pairs", "1", "--seq", "16", "--prompt", "4", "--v", "64", "--d", "32", "--reps",
                 "1", "--warmup", "0", "--threads", "1", "--out", str(tmp_path)])
    assert "| materialised logits |" in text and "| fused (chunked) |" in text and "failed" not in text
    assert list(tmp_path.glob("dpo-*.json"))


def test_stochastok_bench(tmp_path: Path) -> None:
    """The benchmark that broke silently when the objective refactor removed `_loss` (found running the docs)."""
    text = _run(["bench/stochastok.py", "--lengths", "64", "--p", "0.5", "--repeats", "1", "--wait-p", "0.3",
                 "--packing-p", "0.3", "--out", str(tmp_path)])
    assert "| 64 | 0.5 |" in text and "| 0.3 |" in text and "data/step" in text
    assert list(tmp_path.glob("stochastok-*.json"))
