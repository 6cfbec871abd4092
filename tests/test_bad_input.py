"""Bad input, tried as a user would: each case runs `python train.py ...` and must end with one actionable message
(no traceback), a non-zero exit code, and nothing written before it touched.

docs/robustness.md holds the table of these cases, what the user sees and the exit code; it is written by this
file: `TOKENSMITH_WRITE_ROBUSTNESS=1 make test-slow PYTEST_ARGS=tests/test_bad_input.py`. Slow (~2 min): CI runs it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT

pytestmark = pytest.mark.slow

DOC = ROOT / "docs" / "robustness.md"
BASE = ["debug=smoke", "callbacks.progress_bar=null", "trainer.accelerator=cpu"]

# (case, overrides with {tmp} for the test's directory, a fragment the message must contain)
CASES = [
    ("unknown experiment", ["experiment=nope"], "skillit/lego, skillit/lego_smollm2, stochastok/addition"),
    ("unknown group option", ["model=gpt5"], "the options are: hf_llama_tiny, smollm2_135m, tiny"),
    ("unknown key", ["trainer.max_stepz=3"], "Key 'max_stepz' is not in struct"),
    ("wrong type", ["trainer.max_steps=abc"], "full_key: trainer"),
    ("negative learning rate", ["method.optimizer.lr=-1"], "Invalid learning rate: -1"),
    ("batch size < 1", ["data.batch_size=0"], "data.batch_size must be >= 1"),
    ("DPO beta <= 0", ["data=preference_jsonl", "data.source.path={tmp}/pairs.jsonl", "method=dpo", "method.beta=0"],
     "beta must be > 0"),
    ("tokenizer/model vocabulary mismatch", ["model=hf_llama_tiny", "model.vocab_size=100"],
     "model's vocab size is 100"),
    ("malformed data row", ["data=jsonl", "data.source.path={tmp}/bad.jsonl"], "bad.jsonl line 2"),
    ("empty data file", ["data=jsonl", "data.source.path={tmp}/empty.jsonl"], "the dataset is empty"),
    ("missing data file", ["data=jsonl", "data.source.path={tmp}/missing.jsonl"], "does not exist"),
    ("empty preference response", ["data=preference_jsonl", "data.source.path={tmp}/empty_response.jsonl",
                                   "method=dpo"], "response is empty"),
    ("DPO on pretraining text", ["method=dpo"], "trains on preference pairs (data.format=preference"),
    ("GRPO on pretraining text", ["method=grpo", "reward=arith"], "trains on prompts with answers (data.format=prompt"),
    ("GRPO stage of a two-stage run on SFT data", ["experiment=grpo/arith", "finetune.data.format=sft"],
     "the fine-tuning stage: GRPOModule"),
    ("cDPO recipe: k < 2 samples", ["experiment=cdpo/arith", "recipe.sample.k=1"],
     "recipe.sample.k=1 must be >= 2"),
    ("cDPO recipe: coverage outside (0, 1]", ["experiment=cdpo/arith", "recipe.select.negative_coverage=1.5"],
     "recipe.select.negative_coverage=1.5 must be in (0, 1]"),
    ("cDPO recipe: an unknown preference arm", ["experiment=cdpo/arith", "recipe.arms=[dpo,ipo]"],
     "must be distinct names among ['dpo', 'cdpo', 'shuffled', 'constant']"),
    ("cDPO recipe: resume a dir that is not a recipe's", ["experiment=cdpo/arith", "ckpt_path={tmp}"],
     "not the run dir of a recipe"),
    ("D³S token fraction K outside (0, 1]", ["experiment=d3s/arith", "downsample.k_init=0"],
     "downsample.k_init is a kept fraction in (0, 1], got 0"),
    ("D³S: a setting it does not take", ["data=arith_prompts", "method=grpo", "reward=arith", "downsample=d3s",
                                         "+downsample.n_start=0.5"],
     "downsample.n_start is not a setting of D3S"),
    ("Rainbow canvas smaller than an answer", ["experiment=rainbow/copy", "data.task.max_len=12", "data.canvas=8"],
     "needs a canvas of"),
    ("Rainbow padding with K < 1 pads", ["experiment=rainbow/copy", "data.n_pads=0"],
     "rainbow padding needs at least one pad token"),
    ("Skill-It over RL prompts that have no skill", ["data=prompts_jsonl", "data.source.path={tmp}/prompts.jsonl",
                                                    "method=grpo", "reward=arith", "curriculum=skillit"],
     "training records have no skill"),
    ("Skill-It's loss signal on GRPO prompts", ["experiment=grpo/arith_skillit", "curriculum.callback.signal=loss"],
     "use method=grpo with signal=reward"),
    ("LoRA on a module the model does not have", ["+model.lora={r:8,target_modules:[qq_proj]}"],
     "This model's projections are ['down_proj', 'gate_proj', 'k_proj', 'o_proj', 'q_proj', 'up_proj', 'v_proj']"),
    ("LoRA rank r < 1", ["+model.lora={r:0}"], "model.lora: `r` should be a positive integer"),
    ("truncated checkpoint", ["ckpt_path={tmp}/truncated.ckpt"], "is truncated or not a checkpoint"),
    ("checkpoint from another model", ["model.d_model=64", "ckpt_path={tmp}/trained"],
     "was written by a different model"),
    ("checkpoint of another optimizer",
     ["method.optimizer._target_=src.models.master_weights.master_weight_adamw", "ckpt_path={tmp}/trained"],
     "its state cannot be restored into another optimizer"),
    ("Rainbow lengths: canvas shorter than the longest answer", ["experiment=rainbow/lengths", "data.canvas=8"],
     "needs a canvas of at least max_len + 1"),
]


def _prepare(tmp: Path) -> None:
    (tmp / "bad.jsonl").write_text('{"text": "fine"}\n{"text": 5}\n')
    (tmp / "empty.jsonl").write_text("")
    pair = {"prompt": "p", "chosen": "a b", "rejected": "c d"}
    (tmp / "pairs.jsonl").write_text("".join(json.dumps(pair) + "\n" for _ in range(20)))
    (tmp / "prompts.jsonl").write_text("".join(json.dumps({"prompt": f"{i}+{i}=", "answer": 2 * i}) + "\n"
                                              for i in range(40)))
    (tmp / "empty_response.jsonl").write_text(json.dumps(pair) + "\n" + json.dumps({**pair, "chosen": ""}) + "\n")
    trained = tmp / "trained"
    proc = subprocess.run([sys.executable, "train.py", *BASE, "trainer.max_steps=2", f"hydra.run.dir={trained}"],
                          cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = (trained / "checkpoints" / "last.ckpt").read_bytes()
    (tmp / "truncated.ckpt").write_bytes(data[: len(data) // 2])


def _env() -> dict[str, str]:
    return {**{k: v for k, v in os.environ.items() if k not in ("TOKENSMITH_RUN_NAME", "HYDRA_FULL_ERROR")},
            "OMP_NUM_THREADS": "1"}


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _message(stderr: str, tmp: Path) -> str:
    """What the user is told: our `error:` line (Hydra's own message for config errors), without Lightning's info
    lines, warnings and Hydra's search-path listing; paths made generic."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    ours = [i for i, ln in enumerate(lines) if ln.startswith("error:")]
    if ours:
        kept = lines[ours[0]:]
        kept = kept[: next((j for j, ln in enumerate(kept) if ln.startswith("(set HYDRA_FULL_ERROR")), len(kept))]
    else:
        noise = ("Config search path", "provider=", "Set the environment variable", "[", "Seed set")
        kept = [ln for ln in lines if not ln.startswith(noise) and "Warning" not in ln and "warn(" not in ln]
    text = " ".join(kept)
    return re.sub(r"\s+", " ", text.replace(str(tmp), "<tmp>").replace(str(ROOT), "<repo>"))


def test_every_bad_input_is_one_message_a_failure_code_and_no_damage(tmp_path: Path) -> None:
    _prepare(tmp_path)
    before = _digest(tmp_path)
    rows = []
    for i, (case, overrides, fragment) in enumerate(CASES):
        args = [a.replace("{tmp}", str(tmp_path)) for a in overrides]
        run = tmp_path / "runs" / f"case{i}"
        proc = subprocess.run([sys.executable, "train.py", *BASE, *args, f"hydra.run.dir={run}"], cwd=ROOT,
                              env=_env(), capture_output=True, text=True, timeout=240)
        message = _message(proc.stderr, tmp_path)
        assert proc.returncode != 0, f"{case}: exit 0\n{proc.stderr[-2000:]}"
        assert "Traceback" not in proc.stderr, f"{case}: a traceback\n{proc.stderr[-3000:]}"
        assert fragment in message, f"{case}: {fragment!r} not in {message!r}"
        rows.append((case, " ".join(overrides), message, proc.returncode))
    after = {k: v for k, v in _digest(tmp_path).items() if not k.startswith("runs/")}
    assert after == before  # no data file, checkpoint or finished run was touched
    table = ["| input | command (`python train.py debug=smoke ...`) | what the user sees | exit |", "|---|---|---|---|"]
    table += [f"| {c} | `{o}` | {m.replace('|', '/')[:400]} | {rc} |" for c, o, m, rc in rows]
    if os.environ.get("TOKENSMITH_WRITE_ROBUSTNESS") == "1":
        text = DOC.read_text()
        start, end = text.index("<!-- bad-input table -->"), text.index("<!-- end bad-input table -->")
        DOC.write_text(text[:start] + "<!-- bad-input table -->\n" + "\n".join(table) + "\n" + text[end:])
    documented = DOC.read_text()
    for case, *_ in rows:
        assert f"| {case} |" in documented, f"docs/robustness.md lacks the case {case!r}: regenerate the table"
