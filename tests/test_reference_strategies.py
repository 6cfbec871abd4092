"""The reference model under real strategies on 2 CPU processes: placed and sharded like the policy, never trained.

`tests.distributed.ReferenceProbeLM` logs `train/ref_gap` = mean(log π − log π_ref) over label tokens: exactly 0 on
the first step (the reference is a copy of the starting policy), then positive as the policy fits its data while
the reference stays where it started. DDP, ZeRO-2 and ZeRO-3 take 25-70 s each on 2 cores: `slow` (`make test-slow`).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from tests.distributed import train_subprocess

PROBE = ["method._target_=tests.distributed.ReferenceProbeLM", "+method.reference=copy", "debug=smoke",
         "trainer.max_steps=6", "trainer.accelerator=cpu", "callbacks.progress_bar=null",
         "callbacks.run_artifacts.sample_max_new_tokens=0", "trainer.devices=2"]


@pytest.mark.parametrize(("strategy", "param_type", "local_fraction"), [
    pytest.param("ddp", "Parameter", 1.0, marks=pytest.mark.slow),  # replicated, like the policy
    ("fsdp", "DTensor", 0.5),  # FSDP2: each of the 2 ranks holds half of every tensor
    pytest.param("deepspeed_zero2", "Parameter", 1.0, marks=pytest.mark.slow),  # ZeRO-2: parameters replicated
    pytest.param("deepspeed_zero3", "Parameter", 0.5, marks=pytest.mark.slow),  # ZeRO-3 partitions
])
def test_reference_is_placed_like_the_policy_and_stays_frozen(strategy: str, param_type: str, local_fraction: float,
                                                              tmp_path: Path) -> None:
    run = train_subprocess(tmp_path / strategy, [*PROBE, f"strategy={strategy}"])
    rows = csv.DictReader((run / "csv" / "metrics.csv").read_text().splitlines())
    gaps = [float(r["train/ref_gap"]) for r in rows if r.get("train/ref_gap")]
    assert len(gaps) == 6
    assert abs(gaps[0]) < 1e-5  # step 1: the policy is its reference
    assert gaps[-1] > 0.05  # the policy learned; the reference did not move with it
    probe = json.loads((run / "reference_probe.json").read_text())
    assert probe["param_types"] == [param_type]
    assert probe["local_fraction"] == pytest.approx(local_fraction, abs=0.02)  # sharded like the policy
    assert probe["requires_grad"] is False
