"""Down-samplers as objects: the configs build them, unknown settings are one error, checkpoints' mappings read
back, and the per-skill rewards a rollout objective hands to callbacks."""

from __future__ import annotations

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from src.models.downsamplers import D3S, Downsampler, RandomDownsample, build_downsampler
from src.models.rollout import RolloutRewards


@pytest.mark.parametrize(("name", "cls"), [("none", Downsampler), ("random", RandomDownsample), ("d3s", D3S)])
def test_each_config_builds_its_class_and_round_trips_through_its_description(name: str, cls: type) -> None:
    obj = instantiate(OmegaConf.load(f"conf/downsample/{name}.yaml"))
    assert type(obj) is cls
    again = build_downsampler(obj.describe())  # what a checkpoint's hyper-parameters hold
    assert type(again) is cls and again.describe() == obj.describe()


def test_an_unknown_setting_is_one_error_naming_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"downsample.n_start is not a setting of D3S .* n_init"):
        D3S(n_start=0.5)
    with pytest.raises(ValueError, match="downsample.sample is not a setting of Downsampler"):
        Downsampler(sample="intra")
    with pytest.raises(ValueError, match="downsample.sample must be one of"):
        RandomDownsample(sample="within")


def test_the_schedule_moves_both_fractions_linearly() -> None:
    d = D3S(n_init=0.25, n_final=1.0, k_init=0.2, k_final=0.6)
    assert d.fractions(0.0) == (0.25, 0.2)
    assert d.fractions(0.5) == pytest.approx((0.625, 0.4))
    assert d.fractions(2.0) == (1.0, 0.6)  # progress is clamped to [0, 1]


def test_random_keeps_d3s_counts_and_needs_the_samplers_generator() -> None:
    adv = torch.tensor([2.0, 1.0, 0.0, 0.0, -1.0, -3.0, 0.5, -0.5])
    mask = torch.ones(8, 5, dtype=torch.bool)
    valid = torch.ones(8, dtype=torch.bool)
    ent = torch.rand(8, 5)
    settings = {"n_init": 0.5, "n_final": 0.5, "k_init": 0.4, "k_final": 0.4}
    d3s = D3S(**settings)(adv, ent, mask, valid, 4, 0.0)
    rnd = RandomDownsample(**settings)(adv, ent, mask, valid, 4, 0.0, torch.Generator().manual_seed(0))
    assert int(d3s.rollouts.sum()) == int(rnd.rollouts.sum()) == 4
    assert int(d3s.tokens.sum()) == int(rnd.tokens.sum()) == 8
    with pytest.raises(ValueError, match="generator"):
        RandomDownsample(**settings)(adv, ent, mask, valid, 4, 0.0)


def test_rollout_rewards_give_the_mean_reward_per_skill_over_valid_rollouts() -> None:
    r = RolloutRewards(torch.tensor([1.0, 0.0, 0.5, 9.0]), torch.tensor([True, True, True, False]),
                       torch.tensor([0, 0, 2, 2]))
    assert r.per_skill() == {0: 0.5, 2: 0.5}
    assert RolloutRewards(r.rewards, r.valid).per_skill() == {}
    assert RolloutRewards.of({"rollouts": r}) is r and RolloutRewards.of(None) is None
