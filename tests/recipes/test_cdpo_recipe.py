"""`python train.py experiment=cdpo/arith` end to end at smoke size: every stage writes its artifact, DPO starts
at its reference (the base), and a rerun skips finished stages and redoes only what is missing."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch

from src.runtime.run import run_training
from tests.helpers import compose_cfg

STAGES = ["sft", "sample", "select", "positive", "negative", "score", "dpo", "cdpo", "shuffled", "constant"]
ARMS = "recipe.arms=[dpo,cdpo,shuffled,constant]"  # with cDPO's two controls


def test_cdpo_recipe_runs_every_stage_and_a_rerun_skips_them(run_dir: Path) -> None:
    cfg = compose_cfg(["experiment=cdpo/arith", "debug=smoke", "callbacks.progress_bar=null",
                       "callbacks.run_artifacts.sample_max_new_tokens=0", ARMS], run_dir)
    metrics = run_training(cfg)
    assert json.loads((run_dir / "recipe.json").read_text())["done"] == STAGES
    for artifact in ["sft/final.pt", "tokenizer/tokenizer.json", "sample/samples.jsonl", "select/positive.jsonl",
                     "select/negative.jsonl", "select/pairs.jsonl", "positive/final.pt", "negative/final.pt",
                     "score/pairs.jsonl", "score/critical_tokens.html", "dpo/final.pt", "cdpo/final.pt"]:
        assert (run_dir / artifact).is_file(), artifact
    for stage in ("dpo", "cdpo", "shuffled", "constant"):  # the reference is the start: log-ratios 0, loss ln 2
        assert metrics[f"{stage}/train/loss_first"] == pytest.approx(math.log(2), abs=1e-4)
    assert {"sft/arith/acc", "positive/arith/acc", "dpo/arith/acc", "cdpo/arith/acc", "score/hit_rate",
            "select/pairs", "sample/correct"} <= set(metrics)
    scored = [json.loads(x) for x in (run_dir / "score/pairs.jsonl").read_text().splitlines()]
    assert all(r["rejected_weights"][-1] == 1.0 for r in scored)
    final = {s: torch.load(run_dir / s / "final.pt", weights_only=True) for s in ("cdpo", "shuffled", "constant")}
    for control in ("shuffled", "constant"):  # each control trained on its own weights, from the same start
        assert any(not torch.equal(final["cdpo"][k], final[control][k]) for k in final["cdpo"]), control
    assert {"gain/cdpo_vs_shuffled", "gain/cdpo_vs_constant"} <= set(metrics)

    # a rerun redoes exactly the lost stages (here score, and dpo from scratch); this dpo reads the base's log-probs
    # computed once by the score stage (reference=precomputed) instead of a reference copy: the same run
    kept = {s: (run_dir / s / "final.pt").stat().st_mtime_ns for s in ("sft", "positive", "negative", "cdpo")}
    (run_dir / "score/pairs.jsonl").unlink()
    shutil.rmtree(run_dir / "dpo")
    again = run_training(compose_cfg(["experiment=cdpo/arith", "debug=smoke", "callbacks.progress_bar=null",
                                      "callbacks.run_artifacts.sample_max_new_tokens=0", f"ckpt_path={run_dir}", ARMS,
                                      "recipe.preference.method.reference=precomputed"], run_dir.parent / "second"))
    assert {s: (run_dir / s / "final.pt").stat().st_mtime_ns for s in kept} == kept
    assert (run_dir / "score/pairs.jsonl").is_file() and (run_dir / "dpo/final.pt").is_file()
    assert "reference.frozen" not in str(torch.load(run_dir / "dpo/checkpoints/last.ckpt", weights_only=True)
                                         ["state_dict"].keys())  # no reference model was held
    timing = ("wall_time", "tokens_per_s")
    same = {k: v for k, v in metrics.items() if not any(t in k for t in timing)}
    assert {k: again[k] for k in same} == pytest.approx(same, rel=1e-5, abs=1e-6)



def _gsm8k_style_files(root: Path, n: int = 60) -> tuple[Path, Path]:
    """Your own task, as a user brings it: SFT solutions ending in `#### <answer>` and {prompt, answer} questions."""
    import random

    rng = random.Random(0)
    sft, questions = root / "sft.jsonl", root / "questions.jsonl"
    rows = [(rng.randint(1, 60), rng.randint(1, 60)) for _ in range(n)]
    sft.write_text("".join(json.dumps({"prompt": f"What is {a} plus {b}? ",
                                       "response": f"{a}+{b}={a + b}. #### {a + b}"}) + "\n" for a, b in rows))
    questions.write_text("".join(json.dumps({"question": f"What is {b} plus {a}? ", "answer": str(a + b)}) + "\n"
                                 for a, b in rows))
    return sft, questions


def test_cdpo_recipe_on_your_own_prompt_answer_records_graded_by_the_gsm8k_reward(run_dir: Path) -> None:
    sft, questions = _gsm8k_style_files(run_dir.parent)
    cfg = compose_cfg(["experiment=cdpo/prompts", "debug=smoke", "callbacks.progress_bar=null",
                       "callbacks.run_artifacts.sample_max_new_tokens=0", f"data.source.path={sft}",
                       f"recipe.task.source.path={questions}", "recipe.task.prompt_field=question",
                       "recipe.task.n_eval=10", "recipe.sample.max_new_tokens=12"], run_dir)
    metrics = run_training(cfg)
    assert json.loads((run_dir / "recipe.json").read_text())["done"] == STAGES[:-2]
    held_out = [json.loads(x) for x in (run_dir / "task/eval.jsonl").read_text().splitlines()]
    assert len(held_out) == 10 and held_out[0]["prompt"].startswith("What is")
    sampled = {json.loads(x)["prompt"] for x in (run_dir / "sample/samples.jsonl").read_text().splitlines()}
    assert not sampled & {r["prompt"] for r in held_out}  # held-out questions are never sampled
    for stage in ("sft", "positive", "negative", "dpo", "cdpo"):  # every stage's held-out accuracy, by the reward
        assert 0.0 <= metrics[f"{stage}/task/acc"] <= 1.0, stage
    assert metrics["select/pairs"] >= 1 and "gain/cdpo_vs_dpo" in metrics
    assert metrics["score/n"] == 0 and "no steps" in json.loads((run_dir / "score/analysis.json").read_text())["note"]
    assert (run_dir / "score/critical_tokens.html").is_file()
    assert not (run_dir / "score/lowest_token_vs_first_wrong_step.png").exists()


@pytest.mark.slow
def test_with_wandb_the_scored_solutions_are_a_wandb_table(tmp_path: Path) -> None:
    """logger=wandb (offline): the score stage logs its table of coloured solutions and the lowest-token plot to a
    W&B run of its own. In a subprocess: W&B's per-process service must not leak into other tests."""
    import os
    import subprocess
    import sys

    from tests.helpers import ROOT

    run = tmp_path / "run"
    env = {**{k: v for k, v in os.environ.items() if k not in ("WANDB_SERVICE", "WANDB_DIR", "TOKENSMITH_RUN_NAME")},
           "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    proc = subprocess.run([sys.executable, "train.py", "experiment=cdpo/arith", "debug=smoke", "logger=wandb",
                           "callbacks.progress_bar=null", f"hydra.run.dir={run}"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (records,) = list((run / "score" / "wandb").glob("offline-run-*/run-*.wandb"))
    blob = records.read_bytes()
    assert b"cdpo/critical_tokens" in blob and b"cdpo/lowest_token_vs_first_wrong_step" in blob
