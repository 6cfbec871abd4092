"""experiment=rainbow/copy end to end: the run writes the length metrics, their plot and diffusion samples; a resumed
masked-diffusion run trains exactly like an uninterrupted one (the masking generator travels in checkpoints)."""

from __future__ import annotations

import json
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch

from src.callbacks.artifacts import RunArtifacts
from src.runtime.build import build_components
from src.runtime.checkpoints import resolve_ckpt_path
from src.runtime.run import run_training
from tests.helpers import compose_cfg

SMOKE = ["experiment=rainbow/copy", "debug=smoke", "trainer.accelerator=cpu", "callbacks.progress_bar=null",
         "data.task.n_train=2000", "callbacks.length_eval.multipliers=[1,2]"]


@pytest.mark.parametrize("padding", ["eos", "rainbow"])
def test_smoke_run_writes_length_metrics_plot_and_samples(run_dir: Path, padding: str) -> None:
    metrics = run_training(compose_cfg([*SMOKE, f"data.padding={padding}"], run_dir))
    saved = json.loads((run_dir / "metrics.json").read_text())
    for m in (1, 2):
        assert 0.0 <= saved[f"eval/exact@{m}x"] <= 1.0 and 0.0 <= saved[f"eval/early_end@{m}x"] <= 1.0
        assert 0.0 <= saved[f"eval/len@{m}x"] <= 16 * m
    assert saved["eval/target_len"] > 1 and metrics["steps"] == 4
    assert (run_dir / "length_eval.png").is_file()
    assert "### 'c:31415='" in (run_dir / "samples.txt").read_text()


class _StopAt(pl.Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer: pl.Trainer, *args: object) -> None:
        if trainer.global_step >= self.step:
            trainer.should_stop = True


def _fit(cfg, extra=(), ckpt_path=None) -> list[tuple[int, float]]:  # noqa: ANN001
    pl.seed_everything(cfg.seed, workers=True)
    dm, module, trainer = build_components(cfg)
    trainer.callbacks.extend(extra)
    trainer.fit(module, datamodule=dm, ckpt_path=ckpt_path)
    return next(c for c in trainer.callbacks if isinstance(c, RunArtifacts)).train_history


def test_resume_is_exact(tmp_path: Path) -> None:
    """2N steps straight == N, stop, resume, N more: the same loss at every step (same masks, same t)."""
    torch.set_num_threads(1)
    n = 4
    common = [*SMOKE, f"trainer.max_steps={2 * n}", f"trainer.val_check_interval={n}", "callbacks.length_eval=null",
              "callbacks.run_artifacts.sample_max_new_tokens=0"]
    straight = _fit(compose_cfg(common, tmp_path / "a"))
    _fit(compose_cfg(common, tmp_path / "b"), extra=[_StopAt(n)])
    resumed = _fit(compose_cfg(common, tmp_path / "b"),
                   ckpt_path=resolve_ckpt_path("last", tmp_path / "b", tmp_path / "logs"))
    assert [s for s, _ in straight] == [s for s, _ in resumed]
    torch.testing.assert_close(torch.tensor([x for _, x in resumed]), torch.tensor([x for _, x in straight]),
                               rtol=0, atol=1e-5)


LENGTHS = ["experiment=rainbow/lengths", "debug=smoke", "trainer.accelerator=cpu", "callbacks.progress_bar=null",
           "data.task.n_train=2000", "callbacks.length_eval.multipliers=[1,4]"]


@pytest.mark.parametrize("padding", ["eos", "rainbow"])
def test_lengths_smoke_run_writes_validity_and_the_end_tokens_spread(run_dir: Path, padding: str) -> None:
    """experiment=rainbow/lengths: valid@ and p(x_{j-k} = eos | x_j = eos) at each canvas, next to the data's own
    value: under <eos> padding (n uniform in 1..12 over the 8 smoke problems) a positive frequency, under Rainbow
    padding exactly 0 (one end token per answer)."""
    run_training(compose_cfg([*LENGTHS, f"data.padding={padding}"], run_dir))
    saved = json.loads((run_dir / "metrics.json").read_text())
    for m in (1, 4):
        assert 0.0 <= saved[f"eval/valid@{m}x"] <= 1.0
        for k in (1, 2, 4):
            assert 0.0 <= saved[f"eval/eos_given_eos_k{k}@{m}x"] <= 1.0
    data = [saved[f"eval/data_eos_given_eos_k{k}"] for k in (1, 2, 4)]
    if padding == "eos":  # the farther the conditioning end token, the less it says: k = 1 > 2 > 4
        assert data[0] > data[1] > data[2] > 0
    else:
        assert data == [0.0, 0.0, 0.0]
