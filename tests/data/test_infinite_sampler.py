from __future__ import annotations

import itertools

import torch
from torch.utils.data import DataLoader, Dataset

from src.data.sampler import InfiniteSampler


def take(sampler, n):
    return list(itertools.islice(iter(sampler), n))


def test_each_epoch_is_a_permutation_and_epochs_differ():
    n = 37
    stream = take(InfiniteSampler(n, seed=3), 3 * n)
    epochs = [stream[i * n : (i + 1) * n] for i in range(3)]
    assert all(sorted(e) == list(range(n)) for e in epochs)
    assert epochs[0] != epochs[1] != epochs[2]


def test_same_seed_same_order_other_seed_other_order():
    assert take(InfiniteSampler(50, seed=1), 120) == take(InfiniteSampler(50, seed=1), 120)
    assert take(InfiniteSampler(50, seed=1), 50) != take(InfiniteSampler(50, seed=2), 50)
    assert take(InfiniteSampler(5, shuffle=False), 7) == [0, 1, 2, 3, 4, 0, 1]


def test_ranks_are_disjoint_and_interleave_into_the_global_stream():
    n, world, k = 23, 3, 40
    glob = take(InfiniteSampler(n, seed=0), world * k)
    per_rank = [take(InfiniteSampler(n, seed=0, rank=r, world_size=world), k) for r in range(world)]
    for r in range(world):
        assert per_rank[r] == glob[r::world]  # rank r takes global positions r, r+W, r+2W, ...
    # one epoch's positions are split without overlap and cover the dataset
    first_epoch_positions = [(r + j * world) for r in range(world) for j in range(k) if r + j * world < n]
    assert sorted(glob[p] for p in first_epoch_positions) == list(range(n))


def test_resume_from_offset_is_exactly_the_continuation():
    n, world = 19, 2
    for start in (0, 2, 18, 38, 100):
        for r in range(world):
            full = take(InfiniteSampler(n, seed=5, rank=r, world_size=world), 200)
            resumed = take(InfiniteSampler(n, seed=5, rank=r, world_size=world, start_sample=start), 50)
            assert resumed == full[start // world : start // world + 50]
    s = InfiniteSampler(n, seed=5)
    assert s.global_indices(30, 25).tolist() == take(s, 55)[30:]


def test_lightning_treats_the_loader_as_infinite_and_keeps_our_sampler_under_ddp():
    from lightning.fabric.utilities.data import has_len
    from torch.utils.data import DistributedSampler

    loader = DataLoader(range(10), sampler=InfiniteSampler(10), batch_size=2)
    assert not has_len(loader)
    # Lightning only injects its own DistributedSampler when the loader's sampler is not one already
    assert isinstance(loader.sampler, DistributedSampler)


class _Echo(Dataset):
    def __len__(self):
        return 30

    def __getitem__(self, i):
        return torch.tensor(i)


def test_same_stream_with_two_workers():
    def batches(workers):
        loader = DataLoader(
            _Echo(), batch_size=4, sampler=InfiniteSampler(30, seed=9, start_sample=8), num_workers=workers
        )
        return [b.tolist() for b in itertools.islice(iter(loader), 12)]

    expected = take(InfiniteSampler(30, seed=9, start_sample=8), 48)
    assert sum(batches(0), []) == expected
    assert batches(2) == batches(0)
