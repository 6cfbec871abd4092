"""Skill-mixture sampling for an `LMDataModule` whose records carry a skill (`data.format=prompt`: RL prompts).

Skill curricula (docs/skillit.md) set a mixture over skills during training; for skill-labelled questions the
data module is `SkillDataModule`. RL prompt data (`{prompt, answer, skill}`, src/data/formats/prompt.py) is an
`LMDataModule` instead, and this mixin gives it the same surface the curriculum callbacks drive
(src/callbacks/skills/): `k`, `skill_names`, `skills_graph`, `set_mixture`, `current_weights`, `sampler`,
`restored`, `skill_val_batches`. It is off (the module's own uniform stream, every number unchanged) unless
`data.mixture` is set, which the `curriculum=` configs do through `${oc.select:curriculum.mixture,null}`.

How: the train items are grouped by skill (a stable sort of their `skill` column: skill i is the i-th smallest
skill value, named `skill<value>` as GRPO's `train/reward_skill<value>`), and a `SkillSampler`
(src/data/skill_sampler.py) draws positions in that grouped view. The mixture schedule travels with the
checkpoint next to the stream position, as for `SkillDataModule`. The validation split, grouped the same way,
gives each skill's held-out prompts (`skill_val_batches`); every skill needs some.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from src.data.errors import DataError
from src.data.skill_sampler import MixtureControl, SkillSampler, check_weights
from src.data.skills_graph import validate_graph

NO_SKILL = -1  # what data.format=prompt stores for a record without a skill


def item_skills(dataset: Dataset | None) -> np.ndarray | None:
    """`[N]` skill of every item of a built dataset, or None when its items carry none (a format without skills)."""
    ds = getattr(dataset, "ds", None)  # PromptDataset keeps its tokenized columns
    if ds is None or "skill" not in getattr(ds, "column_names", ()):
        return None
    return np.asarray(ds["skill"], dtype=np.int64)


class SkillView:
    """Train and validation items grouped by skill: the sorted skill values, the grouped train order, the pool's
    per-skill sizes and every skill's validation items."""

    def __init__(self, train_skills: np.ndarray, val_skills: np.ndarray | None, where: str) -> None:
        missing = int((train_skills == NO_SKILL).sum())
        if missing:
            raise DataError(
                f"{where}: {missing} of {len(train_skills)} training records have no skill, and a skill curriculum "
                "samples by skill; give every record a `skill` integer (data.format_options.skill_field names the "
                "field) or use curriculum=none")
        self.values = sorted(set(train_skills.tolist()))  # skill i = the i-th smallest value
        if len(self.values) < 2:
            raise DataError(f"{where}: the records have {len(self.values)} skill(s) ({self.values}); a skill "
                            "curriculum mixes at least 2 (give the records distinct `skill` values, or "
                            "curriculum=none)")
        index = {v: i for i, v in enumerate(self.values)}
        self.train_order = np.argsort(train_skills, kind="stable")  # [N]: dataset positions grouped by skill
        self.pool_sizes = [int((train_skills == v).sum()) for v in self.values]
        if val_skills is None:
            raise DataError(f"{where}: a skill curriculum evaluates every skill on held-out prompts, and this data "
                            "has no validation split; set data.val_fraction > 0 or data.val_source=...")
        self.val_items: list[np.ndarray] = []  # per skill: validation dataset positions
        for v in self.values:
            idx = np.flatnonzero(val_skills == v)
            if idx.size == 0:
                raise DataError(f"{where}: skill {v} has no validation prompts; raise data.val_fraction or give "
                                "data.val_source with prompts of every skill")
            self.val_items.append(idx)
        unknown = sorted(set(val_skills.tolist()) - set(index))
        if unknown:
            raise DataError(f"{where}: the validation prompts have skills {unknown} that no training prompt has")

    @property
    def names(self) -> list[str]:
        return [f"skill{v}" for v in self.values]


class SkillMixing(MixtureControl):
    """Mixin for `LMDataModule` (module docstring). The host calls `_init_skill_mixing` in `__init__`,
    `_build_skill_view` in `setup`, and asks `skill_sampler` for its train sampler when `samples_by_skill`."""

    skill_signals = ("reward",)  # per-skill signal its validation prompts support: the reward of a completion

    batch_size: int
    val_batch_size: int
    seed: int
    train_dataset: Dataset | None
    val_dataset: Dataset | None

    def _init_skill_mixing(self, mixture: str | Sequence[float] | None,
                           skills_graph: Sequence[Sequence[float]] | None) -> None:
        if isinstance(mixture, str) and mixture not in ("natural", "uniform"):
            raise DataError(f"data.mixture={mixture!r}: use natural, uniform, a list of weights (one per skill) "
                            "or null (no skill mixture)")
        self._mixture_cfg = mixture
        self._graph_cfg = skills_graph
        self._view: SkillView | None = None
        self.initial_weights: np.ndarray | None = None
        self.skills_graph: np.ndarray | None = None
        self.sampler: SkillSampler | None = None
        self._schedule: list[tuple[int, list[float]]] | None = None  # restored from a checkpoint

    @property
    def samples_by_skill(self) -> bool:
        """True when `data.mixture` is set: the train stream samples skills by the (curriculum's) mixture."""
        return self._mixture_cfg is not None

    def _build_skill_view(self, where: str) -> None:
        if not self.samples_by_skill or self._view is not None:
            return
        train = item_skills(self.train_dataset)
        if train is None:
            raise DataError(f"{where}: data.mixture is set (a skill curriculum), but data.format="
                            f"{getattr(self, 'format', '?')} records carry no skill; use prompt records with a "
                            "`skill` field (data.format=prompt) or curriculum=none")
        self._view = SkillView(train, item_skills(self.val_dataset), where)
        k = len(self._view.values)
        natural = np.asarray(self._view.pool_sizes, dtype=np.float64) / sum(self._view.pool_sizes)
        m = self._mixture_cfg
        self.initial_weights = (natural if m == "natural" else np.full(k, 1.0 / k) if m == "uniform"
                                else check_weights(m, k, "data.mixture"))
        if self._schedule:
            self.initial_weights = check_weights(self._schedule[0][1], k)
        if self._graph_cfg is not None:
            self.skills_graph = validate_graph(self._graph_cfg, k, "data.skills_graph")

    def _view_or_fail(self) -> SkillView:
        if self._view is None:
            raise DataError("the skill view of this data module is not built: data.mixture is null (set a "
                            "curriculum, e.g. curriculum=skillit) or setup() has not run")
        return self._view

    # ---- the surface the curriculum callbacks drive ----------------------------------------------------------
    @property
    def k(self) -> int:
        return len(self._view_or_fail().values)

    @property
    def skill_names(self) -> list[str]:
        return self._view_or_fail().names

    @property
    def pool_sizes(self) -> list[int]:
        return self._view_or_fail().pool_sizes

    def skill_val_batches(self, skill: int, rank: int = 0, world: int = 1) -> DataLoader:
        """This rank's shard (items rank, rank+W, ...) of skill `skill`'s validation prompts."""
        idx = self._view_or_fail().val_items[skill][rank::world]
        return DataLoader(Subset(self.val_dataset, idx.tolist()), batch_size=self.val_batch_size, shuffle=False,
                          collate_fn=self._collate(), generator=torch.Generator().manual_seed(self.seed))

    # ---- the train stream ----------------------------------------------------------------------------------
    def skill_sampler(self, rank: int, world: int, start: int) -> tuple[Dataset, SkillSampler]:
        """(the train items grouped by skill, the sampler over them) starting at global position `start`."""
        view = self._view_or_fail()
        self.sampler = SkillSampler(view.pool_sizes, self.initial_weights, self.seed, rank, world, start,
                                    schedule=self._schedule, min_available=self.batch_size)
        return Subset(self.train_dataset, view.train_order.tolist()), self.sampler

    def mixture_state(self) -> dict[str, Any]:
        """The schedule for the checkpoint (only when sampling by skill: other checkpoints stay as they were)."""
        if not self.samples_by_skill:
            return {}
        schedule = self.sampler.schedule_state() if self.sampler is not None else (
            self._schedule or [(0, [float(x) for x in self.initial_weights])])
        return {"schedule": schedule}

    def restore_mixture(self, state: dict[str, Any]) -> None:
        sched = state.get("schedule")
        if sched and self.samples_by_skill:
            self._schedule = [(int(s), list(w)) for s, w in sched]
            if self._view is not None:
                self.initial_weights = check_weights(self._schedule[0][1], self.k)
