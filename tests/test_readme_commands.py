"""The README's "Using it" commands, run in the README's order as a new user would, each with `debug=smoke`.

Why in order: the commands are not independent. `python train.py ckpt_path=last` resumes whatever ran last, which in
the README is the bf16-true run with another optimizer (that pair once died in Lightning with `KeyError: 'state'`),
and `python -m src.report` reads the sweep the README ran before it. Files a command names (`my_corpus.jsonl`,
`pairs.jsonl`, `prompts.jsonl`) are written first, small. Skipped, each with its reason in `SKIP`: the SLURM
launch (tests/test_slurm.py, on the cluster CI starts), the SmolLM2 lines (the `heavy` tests of
tests/test_smollm2_experiments.py and tests/test_train_e2e.py) and the pre-registered study (hours;
tests/test_reproduce.py runs its smoke mode).
`slow`: ~20 short runs, several minutes.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT

pytestmark = pytest.mark.slow

SKIP = {
    "hydra/launcher=slurm": "needs a SLURM cluster: tests/test_slurm.py runs it on the one CI starts",
    "smollm2": "loads the 135M model: the heavy tests cover every SmolLM2 line",
    "src.reproduce": "a whole pre-registered study: tests/test_reproduce.py runs its smoke mode",
}


def readme_commands() -> list[str]:
    """The `python ...` lines of the README's "Using it" block, comments stripped, in order."""
    text = (ROOT / "README.md").read_text()
    block = text.split("## Using it", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    return [ln.split("  #")[0].strip() for ln in block.splitlines() if ln.startswith("python ")]


def _user_files(where: Path) -> None:
    """The files the README's commands name, a few records each (a new user brings their own)."""
    words = ["the", "cat", "sat", "on", "a", "mat", "and", "a", "dog", "ran", "to", "the", "park", "while", "it",
             "rained", "all", "day"]
    with (where / "my_corpus.jsonl").open("w") as f:
        for i in range(200):
            f.write(json.dumps({"text": " ".join(words[(i + j) % len(words)] for j in range(12))}) + "\n")
    with (where / "pairs.jsonl").open("w") as f:
        for i in range(40):
            f.write(json.dumps({"prompt": f"{i}+{i}=", "chosen": str(2 * i), "rejected": str(2 * i + 1)}) + "\n")
    with (where / "prompts.jsonl").open("w") as f:
        for i in range(40):
            f.write(json.dumps({"prompt": f"{i}+{i + 1}=", "answer": str(2 * i + 1)}) + "\n")


def _smoke(args: list[str]) -> list[str]:
    """`debug=smoke` for a train.py command; a README override of the step count would win over it: dropped."""
    if args[:2] != ["python", "train.py"] or "--cfg" in args:
        return args
    return [*(a for a in args if not a.startswith("trainer.max_steps=")), "debug=smoke",
            "callbacks.run_artifacts.sample_max_new_tokens=0"]


def test_the_readme_commands_run_in_order(tmp_path: Path) -> None:
    _user_files(tmp_path)
    env = {**{k: v for k, v in os.environ.items() if k != "TOKENSMITH_RUN_NAME"}, "OMP_NUM_THREADS": "1",
           "TOKENSMITH_OUTPUTS": str(tmp_path / "outputs"), "WANDB_MODE": "offline", "PYTHONPATH": str(ROOT)}
    ran, skipped = [], []
    for line in readme_commands():
        reason = next((why for key, why in SKIP.items() if key in line), None)
        if reason:
            skipped.append(line)
            continue
        if "<task>" in line:  # `python -m src.report outputs/<task>/multiruns/<name>`: the sweep run above
            sweeps = sorted((tmp_path / "outputs").glob("*/multiruns/*"))
            assert sweeps, "the README's sweep wrote no multirun dir before src.report"
            line = re.sub(r"outputs/<task>/multiruns/<name>", str(sweeps[-1]), line)
        args = _smoke(shlex.split(line))
        cmd = [sys.executable, str(ROOT / args[1]), *args[2:]] if args[1].endswith(".py") else \
            [sys.executable, *args[1:]]
        proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, f"README command failed: {line}\n{proc.stderr[-3000:]}"
        ran.append(line)
    assert len(ran) >= 18 and len(skipped) == 4, (ran, skipped)  # the block still has its commands
