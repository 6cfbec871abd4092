"""A run's plots reach the loggers that show images (W&B), and carry a title naming the run. No training: the
real W&B path is checked end to end in tests/test_train_e2e.py."""

from __future__ import annotations

import types
from pathlib import Path

import yaml

from src.callbacks.log_images import log_images, run_title


class ImageLogger:
    def __init__(self) -> None:
        self.calls: list[dict] = []

    def log_image(self, **kwargs) -> None:
        self.calls.append(kwargs)


def test_pngs_go_to_image_loggers_only_and_unwritten_plots_are_skipped(tmp_path: Path) -> None:
    (tmp_path / "loss_curve.png").write_bytes(b"\x89PNG")
    wandb_like, csv_like = ImageLogger(), types.SimpleNamespace()  # a CSV logger has no log_image
    trainer = types.SimpleNamespace(global_rank=0, global_step=7, loggers=[csv_like, wandb_like])
    sent = log_images(trainer, {"loss_curve": tmp_path / "loss_curve.png", "skill_mixture": tmp_path / "none.png"})
    assert sent == ["loss_curve"]
    assert wandb_like.calls == [{"key": "plots/loss_curve", "images": [str(tmp_path / "loss_curve.png")], "step": 7}]
    other_rank = types.SimpleNamespace(global_rank=1, global_step=7, loggers=[wandb_like])
    assert log_images(other_rank, {"loss_curve": tmp_path / "loss_curve.png"}) == []


def test_run_title_is_the_runs_overrides_not_its_job_number(tmp_path: Path) -> None:
    job = tmp_path / "6"
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(
        ["experiment=skillit/lego", "curriculum=skillit", "+seed=1", "callbacks.progress_bar=null", "hydra.job.x=1"]))
    assert run_title(job) == "experiment=skillit/lego curriculum=skillit seed=1"
    assert run_title(tmp_path / "2026-12-04_10-00-00") == "2026-12-04_10-00-00"  # no overrides: the dir's name
    (job / "finetune").mkdir()  # a two-stage run's second stage: the run's overrides, the stage named
    assert run_title(job / "finetune") == "experiment=skillit/lego curriculum=skillit seed=1 (finetune)"
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([f"data.k{i}=value{i}" for i in range(20)]))
    assert len(run_title(job)) == 100 and run_title(job).endswith("...")
