"""SkillDataModule: answer-only labels, mixtures, config errors, resume of position and mixture."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

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


def test_loss_on_all_trains_every_next_token_and_validates_the_answer(cache: Path) -> None:
    """`loss_on=all` is the reference code's LM loss on the whole text: every next token of prompt and answer is a
    train target, while validation (val/loss, per-skill loss and accuracy) stays on the answer token."""
    dm = make_dm(cache, loss_on="all")
    batch = next(iter(dm.train_dataloader()))
    ids, labels, mask = batch["input_ids"], batch["labels"], batch["attention_mask"]  # [B, T]
    n = mask.sum(1)  # [B]
    for row in range(4):
        m = int(n[row])
        assert torch.equal(labels[row, : m - 1], ids[row, 1:m])  # pre-shifted: position t predicts token t + 1
        assert dm.tokenizer.decode([int(labels[row, m - 1])]) in ("0", "1")  # the answer is the last target
        assert (labels[row, m:] == -100).all()  # padding is never a target
    val = next(iter(dm.val_dataloader()))
    assert ((val["labels"] != -100).sum(1) == 1).all()
    answer = dm.train_dataset.answers_only()[0]["labels"]  # what the difficulty curricula rank examples by
    assert int((answer != -100).sum()) == 1
    with pytest.raises(DataError, match="loss_on"):
        make_dm(cache, loss_on="prompt")


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
