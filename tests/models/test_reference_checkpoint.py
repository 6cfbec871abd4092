"""A frozen reference copy is left out of full checkpoints and rebuilt on resume: the checkpoint is smaller by the
reference's size, a resumed DPO run equals an uninterrupted one, and a resume that rebuilds another reference
stops with one clear error."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch

from src.models.objective import REFERENCE_KEY
from src.models.reference import ReferenceMismatchError, weights_fingerprint
from src.runtime.build import build_components
from tests.data.test_preference_format import cfg_for, write_pairs
from tests.distributed import StopAtStep

COMMON = ["trainer.max_steps=8", "trainer.val_check_interval=4", "method.optimizer.lr=1e-3",
          "method.reference=copy", "callbacks.progress_bar=null", "callbacks.run_artifacts.sample_max_new_tokens=0"]


def _fit(cfg, stop: int | None = None, ckpt_path: str | None = None) -> pl.LightningModule:  # noqa: ANN001
    pl.seed_everything(cfg.seed, workers=True)
    dm, module, trainer = build_components(cfg)
    if stop is not None:
        trainer.callbacks.append(StopAtStep(stop))
    trainer.fit(module, datamodule=dm, ckpt_path=ckpt_path)
    return module


def test_dpo_checkpoint_leaves_the_reference_out_and_resume_equals_an_uninterrupted_run(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    pairs = write_pairs(tmp_path / "pairs.jsonl")
    straight = _fit(cfg_for(pairs, tmp_path / "a", *COMMON))
    first = _fit(cfg_for(pairs, tmp_path / "b", *COMMON), stop=4)
    last = tmp_path / "b" / "checkpoints" / "last.ckpt"
    ckpt = torch.load(last, weights_only=True)
    assert ckpt["global_step"] == 4
    assert not any(k.startswith("reference.") for k in ckpt["state_dict"])  # not saved ...
    assert ckpt[REFERENCE_KEY] == {"reference.frozen.": weights_fingerprint(first.reference.frozen)}  # ... but named
    resumed = _fit(cfg_for(pairs, tmp_path / "b", *COMMON), ckpt_path=str(last))
    for name, w in straight.state_dict().items():  # the policy and its (rebuilt) reference: the same run
        torch.testing.assert_close(resumed.state_dict()[name], w, rtol=0, atol=1e-6, msg=name)
    assert weights_fingerprint(resumed.reference.frozen) == weights_fingerprint(straight.reference.frozen)


def test_a_resume_that_rebuilds_another_reference_is_refused(tmp_path: Path) -> None:
    pairs = write_pairs(tmp_path / "pairs.jsonl")
    _fit(cfg_for(pairs, tmp_path / "b", *COMMON), stop=2)
    other_start = cfg_for(pairs, tmp_path / "b", *COMMON, "seed=7")  # another initialisation: another reference
    with pytest.raises(ReferenceMismatchError, match="not the one the checkpoint was trained against"):
        _fit(other_start, ckpt_path=str(tmp_path / "b" / "checkpoints" / "last.ckpt"))


def test_a_checkpoint_read_outside_training_warns_and_keeps_the_policy(tmp_path: Path,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    pairs = write_pairs(tmp_path / "pairs.jsonl")
    cfg = cfg_for(pairs, tmp_path / "b", *COMMON)
    trained = _fit(cfg, stop=2)
    torch.manual_seed(123)  # a module (and its reference) built from another initialisation
    _, fresh, _ = build_components(cfg)
    loaded = type(trained).load_from_checkpoint(tmp_path / "b" / "checkpoints" / "last.ckpt", map_location="cpu",
                                                backbone=fresh.backbone, optimizer=torch.optim.AdamW)
    assert "the policy is loaded" in caplog.text
    for name, w in trained.backbone.state_dict().items():
        torch.testing.assert_close(loaded.backbone.state_dict()[name], w, rtol=0, atol=0, msg=name)
