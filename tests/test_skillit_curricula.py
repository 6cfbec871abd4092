"""The other curriculum= configs: skill (anti-)curriculum order skills by loss, difficulty curricula pace the pool
by a reference model's loss, and misuse fails with the fix in the message."""

from __future__ import annotations

import math
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pytest

from src.callbacks.skills.evaluation import SkillEvalCallback
from src.data.errors import DataError
from src.runtime.build import build_components
from tests.helpers import compose_cfg
from tests.test_skillit_callback import TINY, _Record


def _fit(overrides: list[str], run_dir: Path, extra=()):  # noqa: ANN001, ANN202
    cfg = compose_cfg([*TINY, "trainer.max_steps=4", *overrides], run_dir)
    pl.seed_everything(cfg.seed, workers=True)
    dm, module, trainer = build_components(cfg)
    trainer.callbacks.extend(extra)
    trainer.fit(module, datamodule=dm)
    return dm, next(c for c in trainer.callbacks if isinstance(c, SkillEvalCallback))


@pytest.mark.parametrize("reverse", [False, True])
def test_skill_curriculum_trains_the_easiest_or_hardest_skills_first(tmp_path: Path, reverse: bool) -> None:
    name = "skill_anticurriculum" if reverse else "skill_curriculum"
    dm, cb = _fit([f"curriculum={name}", "skillit.rounds=2"], tmp_path / "run")
    first = np.asarray(cb.mixtures[1]["weights"])  # round 1, set at step 0 from the step-0 losses
    loss0 = np.asarray(cb.evals[0]["loss"])
    active = np.flatnonzero(first)
    assert len(active) == math.ceil(5 / 2)
    others = np.setdiff1d(np.arange(5), active)
    if reverse:
        assert loss0[active].min() >= loss0[others].max()
    else:
        assert loss0[active].max() <= loss0[others].min()
    assert np.count_nonzero(cb.mixtures[-1]["weights"]) == 5  # last round: every skill


def test_difficulty_curriculum_starts_on_the_reference_models_easiest_examples(tmp_path: Path) -> None:
    _fit(["curriculum=stratified"], tmp_path / "ref")
    ckpt = tmp_path / "ref" / "checkpoints" / "last.ckpt"
    rec = _Record()
    dm, _ = _fit(["curriculum=curriculum", f"curriculum.callback.reference_ckpt={ckpt}"], tmp_path / "cur", [rec])
    order = dm.sampler.order
    assert (dm.sampler.pacing_block, dm.sampler.pacing_steps) == (8, 4)
    assert sorted(order.tolist()) == list(range(sum(dm.pool_sizes)))
    drawn = dm.sampler.global_indices(0, 4 * 8)
    assert set(drawn[:8]) <= set(order[:8].tolist())  # step 0: only the easiest batch_size examples
    assert set(drawn[8:16]) <= set(order[:138].tolist())  # step 1 of 4: the easiest ceil(550/4)
    later = dm.sampler.global_indices(3 * 8, 200)  # from step 3 on, all 550 are allowed
    rank = {int(i): r for r, i in enumerate(order)}
    assert np.mean([rank[int(i)] >= 275 for i in later]) > 0.3  # about half from the harder half (binomial n=200)
    assert rec.skills[0] == [dm.sampler.skill_of(i) for i in drawn[:8]]  # what was trained
    with pytest.raises(DataError, match="reference_ckpt=<run>/checkpoints/last.ckpt"):
        _fit(["curriculum=anticurriculum"], tmp_path / "anti")


def test_curriculum_on_a_plain_text_corpus_names_the_fix(run_dir: Path) -> None:
    cfg = compose_cfg(["debug=smoke", "curriculum=random", "trainer.accelerator=cpu", "callbacks.progress_bar=null"],
                      run_dir)
    dm, module, trainer = build_components(cfg)
    with pytest.raises(DataError, match="data=lego, addition or skills_jsonl"):
        trainer.fit(module, datamodule=dm)
