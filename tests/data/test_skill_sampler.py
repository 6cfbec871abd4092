"""SkillSampler: statistics follow the weights, DDP round-robin, exact resume, mid-stream changes, workers."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from src.data.skill_sampler import SkillSampler


def take(sampler: SkillSampler, n: int) -> list[int]:
    return list(itertools.islice(iter(sampler), n))


def test_skill_frequencies_match_the_weights_and_cover_each_pool() -> None:
    sizes, w = [5, 50, 500], [0.1, 0.2, 0.7]
    s = SkillSampler(sizes, w, seed=0)
    idx = take(s, 20000)
    skills = np.array([s.skill_of(i) for i in idx])
    freq = np.bincount(skills, minlength=3) / len(idx)
    np.testing.assert_allclose(freq, w, atol=0.015)  # 3.5 sigma for n = 20000
    assert set(i for i in idx if s.skill_of(i) == 0) == set(range(5))  # uniform inside a skill's pool
    # "natural" weights = pool proportions = uniform over examples
    nat = SkillSampler(sizes, np.array(sizes) / sum(sizes), seed=0)
    freq = np.bincount([nat.skill_of(i) for i in take(nat, 20000)], minlength=3) / 20000
    np.testing.assert_allclose(freq, np.array(sizes) / sum(sizes), atol=0.015)


def test_ranks_interleave_into_the_global_stream() -> None:
    glob = take(SkillSampler([7, 9], [0.3, 0.7], seed=4), 3 * 500)
    for r in range(3):
        assert take(SkillSampler([7, 9], [0.3, 0.7], seed=4, rank=r, world_size=3), 500) == glob[r::3]


def test_weight_change_applies_from_the_next_undrawn_position_and_resume_replays_it() -> None:
    s = SkillSampler([10, 10], [1.0, 0.0], seed=1)
    it = iter(s)
    first = [next(it) for _ in range(100)]
    assert all(i < 10 for i in first)  # all skill 0
    pos = s.set_weights([0.0, 1.0])
    assert pos == 100
    second = [next(it) for _ in range(100)]
    assert all(i >= 10 for i in second)  # immediately all skill 1
    with pytest.raises(ValueError, match="already drawn"):
        s.set_weights([0.5, 0.5], from_position=50)
    # a resumed sampler (start + saved schedule) continues exactly, across the change
    resumed = SkillSampler([10, 10], [1.0, 0.0], seed=1, start_sample=60, schedule=s.schedule_state())
    assert take(resumed, 140) == (first + second)[60:]


class _Echo(Dataset):
    def __len__(self) -> int:
        return 1000

    def __getitem__(self, i: int) -> int:
        return i


def test_workers_fetch_what_the_schedule_says_even_when_weights_change_mid_stream() -> None:
    """Indices are drawn in the main process: with 2 workers every batch equals the schedule's global indices."""
    seen = {}
    for workers in (0, 2):
        s = SkillSampler([500, 500], [1.0, 0.0], seed=2)
        loader = DataLoader(_Echo(), batch_size=4, sampler=s, num_workers=workers)
        batches = []
        for step, b in enumerate(loader):
            if step == 3:
                s.set_weights([0.0, 1.0])  # lands after whatever the workers prefetched
            batches.append(b)
            if step == 12:
                break
        got = torch.cat(batches).tolist()
        assert got == s.global_indices(0, len(got))
        assert got[-4:] and all(i >= 500 for i in got[-4:])  # the change reached the loader
        seen[workers] = (got, s.schedule_state())
    assert all(i < 500 for i in seen[2][0][:16])
