"""SkillDataModule: answer-only labels, mixtures, config errors, resume of position and mixture."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from src.data.errors import DataError
from src.data.skill_datamodule import SkillDataModule


def make_dm(tmp_path: Path, **kw) -> SkillDataModule:  # noqa: ANN003
    args = dict(task={"kind": "lego", "k": 5}, n_train=550, pool=[1, 1, 1, 3, 5], n_val_per_skill=10,
                tokenizer={"vocab_size": 280, "mask": False}, batch_size=8, seed=0, cache_dir=str(tmp_path))
    args.update(kw)
    return SkillDataModule(**args)


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("skill-cache")


def test_batches_train_only_the_answer_token(cache: Path) -> None:
    dm = make_dm(cache)
    batch = next(iter(dm.train_dataloader()))
    labels = batch["labels"]  # [B, T]
    assert ((labels != -100).sum(1) == 1).all()  # exactly one target per row
    tok = dm.tokenizer
    for row in range(4):
        t = int((labels[row] != -100).nonzero())
        assert tok.decode([int(labels[row, t])]) in ("0", "1")
        # the label sits on the last prompt token
        assert tok.decode(batch["input_ids"][row, : t + 1].tolist()).endswith("?")
    assert batch["skill"].shape == (8,)


def test_mixtures_and_config_errors(cache: Path) -> None:
    np.testing.assert_allclose(make_dm(cache).initial_weights, np.array([50, 50, 50, 150, 250]) / 550)
    np.testing.assert_allclose(make_dm(cache, mixture="uniform").initial_weights, [0.2] * 5)
    with pytest.raises(DataError, match="3 weights for 5 skills"):
        make_dm(cache, mixture=[1, 1, 1])
    with pytest.raises(DataError, match="data.skills_graph.*4x4 but the data has 5 skills"):
        make_dm(cache, skills_graph=np.eye(4).tolist())
    with pytest.raises(DataError, match="data.pool"):
        make_dm(cache, pool=[1, 1])
    with pytest.raises(DataError, match="kind"):
        make_dm(cache, task={"kind": "sudoku"})


def test_resume_restores_position_and_mixture(cache: Path) -> None:
    dm = make_dm(cache)
    it = iter(dm.train_dataloader())
    batches = [next(it) for _ in range(3)]
    dm.set_mixture([0, 0, 0, 0, 1.0])  # from the next undrawn sample
    batches += [next(it) for _ in range(3)]
    assert (batches[-1]["skill"] == 4).all()
    state = {"samples_consumed": 2 * 8, "schedule": dm.sampler.schedule_state()}  # checkpoint after step 2
    fresh = make_dm(cache)
    fresh.load_state_dict(state)
    assert fresh.restored
    it2 = iter(fresh.train_dataloader())
    for want in batches[2:]:
        got = next(it2)
        assert got["input_ids"].equal(want["input_ids"]) and got["skill"].equal(want["skill"])
