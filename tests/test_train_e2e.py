"""Layers 6-7 for the causal-LM spine: a run learns, resume is exact, the CLI writes what the README says."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch

from src.callbacks.artifacts import RunArtifacts
from src.callbacks.task_eval import _TaskEval
from src.report.collect import read_csv_curves
from src.runtime.build import build_components
from src.runtime.checkpoints import resolve_ckpt_path
from src.runtime.run import run_training
from tests.helpers import ROOT, compose_cfg

# fp32 and a single intra-op thread: bitwise-stable reductions, so resume can be compared tightly.
TINY = [
    "trainer.accelerator=cpu",
    "callbacks.progress_bar=null",
    "callbacks.run_artifacts.sample_max_new_tokens=0",
]


def _history(trainer: pl.Trainer) -> list[tuple[int, float]]:
    cb = next(c for c in trainer.callbacks if isinstance(c, RunArtifacts))
    return cb.train_history


def test_tiny_run_learns(run_dir: Path) -> None:
    """A ~0.5M-parameter model on the generated stories: validation loss falls well below its start."""
    cfg = compose_cfg([*TINY, "trainer.max_steps=120", "trainer.val_check_interval=60",
                       "trainer.limit_val_batches=4", "method.scheduler.warmup_steps=10"], run_dir)
    metrics = run_training(cfg)
    uniform = torch.log(torch.tensor(float(cfg.data.tokenizer.vocab_size))).item()
    assert metrics["steps"] == 120
    assert metrics["train/loss_first"] > 0.8 * uniform  # starts near chance
    assert metrics["val/loss"] < 0.6 * metrics["train/loss_first"]
    assert (run_dir / "metrics.json").is_file() and (run_dir / "loss_curve.png").is_file()


def test_bf16_mixed_with_accumulation_learns(run_dir: Path) -> None:
    """`trainer.precision=bf16-mixed` + accumulation (the usual GPU settings) also learns on CPU autocast."""
    cfg = compose_cfg([*TINY, "trainer.max_steps=60", "trainer.val_check_interval=60", "trainer.limit_val_batches=2",
                       "method.scheduler.warmup_steps=5", "trainer.precision=bf16-mixed",
                       "trainer.accumulate_grad_batches=2"], run_dir)
    metrics = run_training(cfg)
    assert metrics["steps"] == 60  # optimizer steps, each of 2 micro-batches
    assert metrics["val/loss"] < 0.7 * metrics["train/loss_first"]


class _StopAt(pl.Callback):
    """Simulates an interruption: the run ends at `step` although max_steps is larger."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer: pl.Trainer, *args: object) -> None:
        if trainer.global_step >= self.step:
            trainer.should_stop = True


def _fit(cfg, extra_callbacks=(), ckpt_path=None) -> pl.Trainer:  # noqa: ANN001
    pl.seed_everything(cfg.seed, workers=True)
    dm, module, trainer = build_components(cfg)
    trainer.callbacks.extend(extra_callbacks)
    trainer.fit(module, datamodule=dm, ckpt_path=ckpt_path)
    return trainer


class _ValSteps(pl.Callback):
    def __init__(self) -> None:
        self.steps: list[int] = []

    def on_validation_end(self, trainer: pl.Trainer, *args: object) -> None:
        self.steps.append(int(trainer.global_step))


@pytest.mark.parametrize("accumulate", [1, 3])
def test_val_check_interval_counts_optimizer_steps(tmp_path: Path, accumulate: int) -> None:
    """Validation every 4 optimizer steps, as checkpoints and curricula count, also under accumulation (Lightning
    alone counts micro-batches: with accumulation 3 it validated every 4/3 steps, inside accumulation windows)."""
    probe = _ValSteps()
    _fit(compose_cfg([*TINY, "trainer.max_steps=8", "trainer.val_check_interval=4", "trainer.limit_val_batches=1",
                      f"trainer.accumulate_grad_batches={accumulate}"], tmp_path), extra_callbacks=[probe])
    assert probe.steps == [4, 8]


def test_resume_is_exact(tmp_path: Path) -> None:
    """2N straight == N, stop, resume from last.ckpt, N more: same losses at every step after resume.

    Dropout is on, so the global RNG stream must line up too: a DataLoader that drew its base seed from the global
    generator (one draw per iterator, and a resumed run makes one more) used to shift every later dropout mask.
    """
    torch.set_num_threads(1)
    n = 6
    common = [*TINY, f"trainer.max_steps={2 * n}", f"trainer.val_check_interval={n}", "model.dropout=0.1",
              "trainer.limit_val_batches=2", "method.scheduler.warmup_steps=2", "data.num_workers=2",
              "trainer.log_every_n_steps=1"]
    straight = _fit(compose_cfg(common, tmp_path / "a"))
    first = _fit(compose_cfg(common, tmp_path / "b"), extra_callbacks=[_StopAt(n)])
    assert first.global_step == n
    ckpt = resolve_ckpt_path("last", tmp_path / "b", tmp_path / "logs")
    resumed = _fit(compose_cfg(common, tmp_path / "b"), ckpt_path=ckpt)
    assert resumed.global_step == 2 * n
    a, b = _history(straight), _history(resumed)
    assert [s for s, _ in a] == [s for s, _ in b]  # resumed run carries the first half's history too
    torch.testing.assert_close(torch.tensor([x for _, x in b]), torch.tensor([x for _, x in a]),
                               rtol=0, atol=1e-5)
    # csv/metrics.csv keeps the rows logged before the resume (Lightning's CSVLogger deleted them)
    ca, cb = (read_csv_curves(d / "csv" / "metrics.csv")["train/loss"] for d in (tmp_path / "a", tmp_path / "b"))
    assert [s for s, _ in cb] == [s for s, _ in ca] and ca[0][0] < n
    torch.testing.assert_close(torch.tensor([x for _, x in cb]), torch.tensor([x for _, x in ca]), rtol=0, atol=1e-5)



class TrainEndScore(pl.Callback):
    """A task metric computed only when training ends (as ArithEval's is, by default)."""

    def __init__(self) -> None:
        self.results: dict[str, float] = {}

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.results = {"task/score": float(trainer.global_step)}

    def summary_metrics(self) -> dict[str, float]:
        return dict(self.results)


def test_resuming_a_finished_run_keeps_its_metrics(run_dir: Path) -> None:
    """A finished run resumed again (a requeue, a two-stage run going on to stage 2) trains and validates nothing:
    its metrics.json stays as the run wrote it, including metrics computed only at the end of training (a
    re-validation used to rewrite it without them: the D³S study lost its SFT base accuracy that way)."""
    common = [*TINY, "trainer.max_steps=4", "trainer.val_check_interval=2", "trainer.limit_val_batches=1",
              f"+callbacks.score._target_={__name__}.TrainEndScore"]
    run_training(compose_cfg(common, run_dir))
    before = (run_dir / "metrics.json").read_text()
    assert json.loads(before)["task/score"] == 4.0
    run_training(compose_cfg([*common, f"ckpt_path={run_dir}"], run_dir))
    assert (run_dir / "metrics.json").read_text() == before


def test_a_task_eval_at_start_records_the_untrained_score_and_keeps_it_across_a_resume(run_dir: Path) -> None:
    """`at_start: true` scores the starting model (step 0) as `<metric>_start` beside the final score; a resumed run
    keeps the start score from its checkpoint instead of scoring the resumed model as its start."""
    common = [*TINY, "trainer.max_steps=4", "trainer.val_check_interval=2", "trainer.limit_val_batches=1",
              "+callbacks.arith_eval._target_=src.callbacks.task_eval.ArithEval", "+callbacks.arith_eval.n_eval=6",
              "+callbacks.arith_eval.max_new_tokens=4", "+callbacks.arith_eval.at_start=true"]
    first = _fit(compose_cfg([*common, "trainer.max_steps=2"], run_dir))
    cb = next(c for c in first.callbacks if type(c).__name__ == "ArithEval")
    assert set(cb.summary_metrics()) >= {"arith/acc_start", "arith/well_formed_start", "arith/acc"}
    start = cb.start
    ckpt = resolve_ckpt_path("last", run_dir, run_dir.parent / "logs")
    resumed = _fit(compose_cfg(common, run_dir), ckpt_path=ckpt)
    again = next(c for c in resumed.callbacks if type(c).__name__ == "ArithEval")
    assert resumed.global_step == 4 and again.start == start  # restored, not re-scored at step 2

class CountingEval(_TaskEval):
    """A task evaluation that counts the weights it scored (their global steps)."""

    def __init__(self, every_validation: bool = False) -> None:
        super().__init__(every_validation=every_validation)
        self.steps: list[int] = []
        self.step = 0

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        self.step = trainer.global_step

    def evaluate(self, module: pl.LightningModule, tok: Any) -> dict[str, float]:
        self.steps.append(self.step)
        return {"score": float(self.step)}


def test_a_task_eval_scores_each_weights_once(run_dir: Path) -> None:
    """With `every_validation`, the final validation already scored the final weights: the end of training does
    not decode them again (it used to, a minute per SmolLM2 run); without it, the end of training scores them."""
    common = [*TINY, "trainer.max_steps=4", "trainer.val_check_interval=2", "trainer.limit_val_batches=1",
              f"+callbacks.count._target_={__name__}.CountingEval"]
    every = _fit(compose_cfg([*common, "+callbacks.count.every_validation=true"], run_dir / "a"))
    assert next(c for c in every.callbacks if isinstance(c, CountingEval)).steps == [2, 4]
    end = _fit(compose_cfg(common, run_dir / "b"))
    assert next(c for c in end.callbacks if isinstance(c, CountingEval)).steps == [4]


def test_fused_and_reference_losses_give_the_same_trajectory(tmp_path: Path) -> None:
    """20 steps with the chunked kernel vs materialised logits: the same run, up to float round-off."""
    common = [*TINY, "trainer.max_steps=20", "trainer.val_check_interval=20", "trainer.limit_val_batches=1"]
    fused = _history(_fit(compose_cfg([*common, "method.loss_impl=fused", "method.kernel_impl=chunked"],
                                      tmp_path / "f")))
    ref = _history(_fit(compose_cfg([*common, "method.loss_impl=reference"], tmp_path / "r")))
    torch.testing.assert_close(torch.tensor([x for _, x in fused]), torch.tensor([x for _, x in ref]),
                               rtol=1e-4, atol=1e-4)


def _train_cli(args: list[str], log_dir: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "train.py", "debug=smoke", "trainer.accelerator=cpu", f"paths.log_dir={log_dir}", *args],
        cwd=ROOT, env={**os.environ, **env}, capture_output=True, text=True, timeout=300,
    )


def test_cli_writes_the_run_directory(tmp_path: Path) -> None:
    """`python train.py` makes outputs/<task>/runs/<name>/ with metrics, plot, samples, CSV and config."""
    env = {k: v for k, v in os.environ.items() if k != "TOKENSMITH_RUN_NAME"}
    proc = subprocess.run(
        [sys.executable, "train.py", "debug=smoke", "trainer.accelerator=cpu", f"paths.log_dir={tmp_path}"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run,) = (tmp_path / "train" / "runs").iterdir()
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["steps"] == 4 and metrics["val/loss"] is not None
    for name in ("loss_curve.png", "samples.txt", "config_resolved.yaml", "csv/metrics.csv",
                 "checkpoints/last.ckpt", ".hydra/config.yaml"):
        assert (run / name).is_file(), name
    assert "train/loss" in (run / "csv" / "metrics.csv").read_text()


def test_cli_bad_checkpoint_fails_with_one_clear_error(tmp_path: Path) -> None:
    proc = _train_cli([f"ckpt_path={tmp_path / 'missing.ckpt'}"], tmp_path)
    assert proc.returncode != 0
    assert "does not exist" in proc.stderr and "ckpt_path=last" in proc.stderr


def test_cli_second_launch_with_the_same_run_name_fails_and_keeps_the_first(tmp_path: Path) -> None:
    """Two launches given one run name (two plain `python train.py` lines in one SLURM batch step are both named
    slurm-<job>): the second stops with one clear error and the first run's files stay byte-identical."""
    first = _train_cli([], tmp_path, TOKENSMITH_RUN_NAME="shared")
    assert first.returncode == 0, first.stderr[-3000:]
    run = tmp_path / "train" / "runs" / "shared"
    before = {p: (run / p).read_bytes() for p in ("metrics.json", "checkpoints/last.ckpt")}
    second = _train_cli(["seed=2"], tmp_path, TOKENSMITH_RUN_NAME="shared")
    assert second.returncode != 0
    assert "already holds another run" in second.stderr and "Traceback" not in second.stderr
    assert {p: (run / p).read_bytes() for p in before} == before
    resumed = _train_cli(["ckpt_path=last", "trainer.max_steps=6"], tmp_path, TOKENSMITH_RUN_NAME="shared")
    assert resumed.returncode == 0, resumed.stderr[-3000:]  # continuing that run is what the error suggests
    assert json.loads((run / "metrics.json").read_text())["steps"] == 6


def test_wandb_offline_run_holds_the_metrics_and_the_run_dirs_plot(tmp_path: Path) -> None:
    proc = _train_cli(["logger=wandb"], tmp_path, WANDB_MODE="offline")
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run,) = (tmp_path / "train" / "runs").iterdir()
    (records,) = list((run / "wandb").glob("offline-run-*/run-*.wandb"))
    blob = records.read_bytes()
    assert b"train/loss" in blob and b"val/loss" in blob
    assert b"plots/loss_curve" in blob  # the run page shows the run dir's loss_curve.png
    (image,) = list((run / "wandb").glob("offline-run-*/files/media/images/plots/loss_curve_*.png"))
    assert image.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("n_launches", [2])
def test_simultaneous_launches_do_not_share_a_run_dir(tmp_path: Path, n_launches: int) -> None:
    env = {k: v for k, v in os.environ.items() if k != "TOKENSMITH_RUN_NAME"}
    cmd = [sys.executable, "train.py", "debug=smoke", "trainer.max_steps=1", "trainer.accelerator=cpu",
           f"paths.log_dir={tmp_path}", "callbacks.run_artifacts.sample_max_new_tokens=0"]
    procs = [subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
             for _ in range(n_launches)]
    for p in procs:
        assert p.wait(timeout=300) == 0, p.stderr.read().decode()[-2000:]
    runs = list((tmp_path / "train" / "runs").iterdir())
    assert len(runs) == n_launches
    assert all((r / "metrics.json").is_file() for r in runs)


def test_sft_run_on_user_jsonl_with_an_hf_model_learns(tmp_path: Path, run_dir: Path) -> None:
    """The README's SFT path: user prompt/response jsonl, an HF causal LM, loss only on responses — and it learns."""
    import random

    rng = random.Random(0)
    rows = []
    for _ in range(200):
        a, b = rng.randint(0, 9), rng.randint(0, 9)
        rows.append({"prompt": f"What is {a} plus {b}? ", "response": f"{a} plus {b} is {a + b}."})
    data = tmp_path / "sft.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = compose_cfg([*TINY, "data=sft_jsonl", f"data.source.path={data}", "~data.tokenizer.pretrained",
                       "+data.tokenizer.vocab_size=300", "data.num_workers=0", "data.num_proc=null",
                       "data.seq_len=48", "model=hf_llama_tiny", "trainer.max_steps=60",
                       "trainer.val_check_interval=30", "trainer.limit_val_batches=2",
                       "method.scheduler.warmup_steps=5"], run_dir)
    metrics = run_training(cfg)
    assert metrics["steps"] == 60
    # loss is over response tokens only (prompt masking itself is tested in tests/data/test_sft_masking.py)
    assert metrics["train/loss_last10"] < 0.5 * metrics["train/loss_first"]
    assert metrics["val/loss"] < 0.5 * metrics["train/loss_first"]
