"""`SkillDataModule`: a pool of skill-labelled questions behind a `SkillSampler`: generated (LEGO, per-digit
addition) or your own records (`data.task.kind: records`, src/data/tasks/skill_records.py).

Each record is a prompt and an answer: one token for the generated tasks, the response plus end-of-sequence for
records. Items carry the answer as their only target (labels = -100 everywhere else, pre-shifted: a label sits on
the position before its token), so the training loss, Lightning's `val/loss` and the per-skill losses of the
Skill-It callback are all "loss on the answer tokens". `loss_on="all"` makes every next token a training target
(the reference code's LM loss on the whole text); validation stays on the answer.

Mixture: the train stream samples skills by the sampler's weights: `natural` = the pool's own (possibly
imbalanced) proportions, i.e. uniform over examples ("random" baseline), `uniform` = equal per skill
("stratified"), or explicit weights. Curriculum callbacks change them during training through `set_mixture`.

Resume: `state_dict()` holds the global samples consumed (src/data/stream_position.py, as `LMDataModule`), the
mixture schedule and the pool's identity, so a resumed run draws exactly the samples an uninterrupted one would.
"""

from __future__ import annotations

import functools
import hashlib
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from src.data.collate import PadCollator
from src.data.errors import DataError
from src.data.formats.base import with_end
from src.data.lm_datamodule import loader_generator, seed_worker
from src.data.packing import IGNORE_INDEX
from src.data.skill_sampler import MixtureControl, SkillSampler, check_weights
from src.data.skills_graph import validate_graph
from src.data.sources import to_plain
from src.data.stream_position import StreamPosition
from src.data.tasks.skill_records import SkillFields, assign_skills, hold_out_val, read_skill_records
from src.data.tokenizer import Tokenizer, build_tokenizer

log = logging.getLogger(__name__)
TASK_KINDS = ("lego", "addition", "records")
LOSS_ON = ("answer", "all")  # training targets: the answer tokens only, or every next token (validation: answer)


def generate_task(task: Mapping[str, Any], counts: list[int], seed: int) -> list[dict[str, Any]]:
    """Records of the configured generator: `counts[i]` questions of skill i."""
    kind = task.get("kind")
    if kind == "lego":
        from src.data.tasks.lego import generate_lego

        return generate_lego(counts, seed, int(task.get("k", 5)))
    if kind == "addition":
        from src.data.tasks.addition_skills import generate_addition

        return generate_addition(counts, seed, int(task.get("n_digits", 3)))
    raise DataError(f"data.task.kind={kind!r} is not one of {TASK_KINDS}")


def unique_pool(task: Mapping[str, Any], counts: list[int], seed: int, held_out: set[str]) -> list[dict[str, Any]]:
    """`counts[i]` distinct questions of skill i, none of them a validation question (`data.unique: true`): a pool
    in which a round that draws fewer than a skill's pool size never has to repeat a question of it. Drawn from
    growing over-generations of the task (seeded), so the same settings give the same pool; one DataError when
    the task has too few distinct questions."""
    extra = 1.1
    for attempt in range(6):
        want = [int(np.ceil(c * extra)) + 8 for c in counts]
        seen: set[str] = set(held_out)
        got: list[list[dict[str, Any]]] = [[] for _ in counts]
        for r in generate_task(task, want, seed + 7_919 * attempt):
            i = int(r["skill"])
            if r["prompt"] not in seen and len(got[i]) < counts[i]:
                seen.add(r["prompt"])
                got[i].append(r)
        if all(len(g) == c for g, c in zip(got, counts)):
            return [r for g in got for r in g]  # grouped by skill, as generate_task lays the pool out
        extra *= 2
    raise DataError(f"data.unique=true: the task has too few distinct questions for data.n_train (pool sizes "
                    f"{counts}); lower data.n_train or set data.unique=false")


def n_skills_of(task: Mapping[str, Any]) -> int:
    return int(task.get("k", 5)) if task.get("kind") == "lego" else int(task.get("n_digits", 3))


def load_records(task: Mapping[str, Any], n_val: int, seed: int) -> tuple[list[dict], list[dict], list[str]]:
    """(train pool grouped by skill, val set grouped by skill, skill names) of a `kind: records` task."""
    if not task.get("path"):
        raise DataError("data.task.path is not set; give the skills file: data.task.path=path/to/skills.jsonl")
    fields = SkillFields(task.get("prompt_field", "prompt"), task.get("response_field", "response"),
                         task.get("skill_field", "skill"))
    recs = read_skill_records(task["path"], fields)
    names = assign_skills(recs, task.get("skills"), str(task["path"]))
    if task.get("val_path"):
        val = read_skill_records(task["val_path"], fields)
        assign_skills(val, names, str(task["val_path"]))
        train = sorted(recs, key=lambda r: r["skill"])  # stable: file order within a skill
        val = sorted(val, key=lambda r: r["skill"])
    else:
        train, val = hold_out_val(recs, len(names), n_val, seed)
    return train, val, names


class SkillItems(Dataset):
    """Tokenized records: item = {input_ids [L], labels [L], skill []}; the last `n_answer[i]` tokens of record i are
    its answer. Labels are the answer tokens, or with `all_tokens` every next token (`data.loss_on=all`)."""

    def __init__(self, ids: list[list[int]], skills: np.ndarray, n_answer: Sequence[int] | None = None,
                 all_tokens: bool = False) -> None:
        self.ids, self.skills, self.all_tokens = ids, skills, all_tokens
        self.n_answer = n_answer if n_answer is not None else [1] * len(ids)

    def answers_only(self) -> SkillItems:
        """The same items labelled on their answers alone (what per-example difficulty is measured on)."""
        return SkillItems(self.ids, self.skills, self.n_answer)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        ids = self.ids[i]
        # all: every next token; answer: its tokens (after an empty prompt the first has nothing before it)
        n = len(ids) - 1 if self.all_tokens else min(self.n_answer[i], len(ids) - 1)
        labels = [IGNORE_INDEX] * (len(ids) - 1 - n) + ids[-n:]  # pre-shifted: position t predicts token t + 1
        return {
            "input_ids": torch.tensor(ids[:-1], dtype=torch.long),
            "labels": torch.tensor(labels, dtype=torch.long),
            "skill": torch.tensor(int(self.skills[i]), dtype=torch.long),
        }


class SkillDataModule(MixtureControl, StreamPosition, L.LightningDataModule):
    samples_by_skill = True  # the curriculum callbacks' check (src/callbacks/skills/evaluation.py)
    skill_signals = ("loss",)  # per-skill signal its validation items support: answer-token loss (labels)

    def __init__(
        self,
        task: Mapping[str, Any],
        n_train: int = 10000,
        pool: Sequence[float] | None = None,
        n_val_per_skill: int = 100,
        mixture: str | Sequence[float] = "natural",
        skills_graph: Sequence[Sequence[float]] | None = None,
        tokenizer: Mapping[str, Any] | None = None,
        batch_size: int = 32,
        val_batch_size: int | None = None,
        num_workers: int = 0,
        seed: int = 0,
        cache_dir: str = ".cache",
        sample_prompts: list[str] | None = None,
        pin_memory: bool = False,
        loss_on: str = "answer",
        unique: bool = False,
    ) -> None:
        super().__init__()
        self.unique = bool(unique)
        self.task = to_plain(task)
        if loss_on not in LOSS_ON:
            raise DataError(f"data.loss_on={loss_on!r} must be one of {LOSS_ON}")
        self.loss_on = loss_on
        if self.task.get("kind") not in TASK_KINDS:
            raise DataError(f"data.task.kind={self.task.get('kind')!r} is not one of {TASK_KINDS}")
        if batch_size < 1 or n_val_per_skill < 1:
            raise DataError("data.batch_size and data.n_val_per_skill must be >= 1")
        self._records: tuple[list[dict], list[dict]] | None = None
        if self.task["kind"] == "records":
            if pool is not None:
                raise DataError("data.pool sets the proportions of a generated pool; a records pool has the "
                                "file's own (set data.pool=null; data.mixture sets the sampling weights)")
            if self.unique:
                raise DataError("data.unique=true de-duplicates a generated pool; a records pool is your file's "
                                "own (de-duplicate the file, and set data.unique=false)")
            train, val, names = load_records(self.task, int(n_val_per_skill), int(seed))
            self._records, self.k, self.skill_names = (train, val), len(names), names
            self.pool_sizes = np.bincount([r["skill"] for r in train], minlength=self.k).tolist()
        else:
            self.k = n_skills_of(self.task)
            self.skill_names = [f"skill{i + 1}" for i in range(self.k)]
            props = np.ones(self.k) if pool is None else np.asarray(to_plain(pool), dtype=np.float64)
            if props.shape != (self.k,) or np.any(props <= 0):
                raise DataError(f"data.pool={to_plain(pool)} must give {self.k} positive proportions (one per skill)")
            self.pool_sizes = [max(1, int(round(n_train * p / props.sum()))) for p in props]
        self.natural = np.asarray(self.pool_sizes, dtype=np.float64) / sum(self.pool_sizes)
        self.initial_weights = self._resolve_mixture(to_plain(mixture))
        self.skills_graph = None if skills_graph is None else validate_graph(
            to_plain(skills_graph), self.k, "data.skills_graph")
        self.n_val_per_skill, self.batch_size = int(n_val_per_skill), int(batch_size)
        self.val_batch_size, self.num_workers = int(val_batch_size or batch_size), int(num_workers)
        self.tokenizer_cfg = to_plain(tokenizer) if tokenizer else {"vocab_size": 320}
        self.seed, self.cache_dir, self.pin_memory = int(seed), Path(cache_dir), bool(pin_memory)
        self._sample_prompts = list(sample_prompts) if sample_prompts else None
        self._tokenizer: Tokenizer | None = None
        self.train_dataset: SkillItems | None = None
        self.val_dataset: SkillItems | None = None
        self.sampler: SkillSampler | None = None
        self._samples_consumed = 0
        self._consumed_step: int | None = 0  # global step at which _samples_consumed was recorded
        self._schedule: list[tuple[int, list[float]]] | None = None  # restored from a checkpoint
        self._order: tuple[np.ndarray, int, int] | None = None  # difficulty order, samples per step, steps
        self._fingerprint: str | None = None

    def _resolve_mixture(self, mixture: Any) -> np.ndarray:
        if mixture == "natural":
            return self.natural.copy()
        if mixture == "uniform":
            return np.full(self.k, 1.0 / self.k)
        if isinstance(mixture, str):
            raise DataError(f"data.mixture={mixture!r}: use natural, uniform or a list of {self.k} weights")
        return check_weights(mixture, self.k, "data.mixture")

    # ---- records and tokenizer -----------------------------------------------------------------------
    def records(self) -> tuple[list[dict], list[dict]]:
        """(train pool, val set): generated from (seed) and (seed, 'val'); val is balanced over skills."""
        if self._records is None:
            val = generate_task(self.task, [self.n_val_per_skill] * self.k, 1_000_003 + self.seed)
            if self.unique:
                train = unique_pool(self.task, self.pool_sizes, self.seed, {r["prompt"] for r in val})
            else:
                train = generate_task(self.task, self.pool_sizes, self.seed)
            self._records = (train, val)
        return self._records

    @property
    def tokenizer(self) -> Tokenizer:
        if self._tokenizer is None:
            train, _ = self.records()
            texts = lambda: [r["prompt"] + " " + r["response"] for r in train[:20000]]  # noqa: E731
            self._tokenizer = build_tokenizer(self.tokenizer_cfg, texts, self.cache_dir)
        return self._tokenizer

    def _encode(self, recs: list[dict], where: str) -> SkillItems:
        tok = self.tokenizer
        prompts = tok.encode_batch([r["prompt"] for r in recs])
        if self.task["kind"] == "records":  # answer = response + eos, as SFT (src/data/formats/sft.py)
            answers = [with_end(a, tok.eos_id) for a in tok.encode_batch([r["response"] for r in recs])]
            limit = int(self.task.get("max_tokens", 1024))
            for r, p, a in zip(recs, prompts, answers):
                if len(p) + len(a) < 2:  # only eos: nothing to condition on and nothing to predict
                    raise DataError(f"{r['where']}: the prompt and the response are both empty; fix or drop the "
                                    "record")
                if len(p) + len(a) > limit:
                    raise DataError(f"{r['where']}: {len(p) + len(a)} tokens, above data.task.max_tokens={limit}; "
                                    "raise data.task.max_tokens or shorten the record")
            return SkillItems([p + a for p, a in zip(prompts, answers)],
                              np.asarray([r["skill"] for r in recs], dtype=np.int64), [len(a) for a in answers])
        answers = {a: tok.encode(a) for a in {r["response"] for r in recs}}
        for a, ids in answers.items():
            if len(ids) != 1:
                raise DataError(f"{where}: the answer {a!r} encodes to {len(ids)} tokens; answers must be one token "
                                "(use a tokenizer that keeps digits as single tokens)")
        ids = [p + answers[r["response"]] for p, r in zip(prompts, recs)]
        return SkillItems(ids, np.asarray([r["skill"] for r in recs], dtype=np.int64))

    def prepare_data(self) -> None:
        _ = self.tokenizer  # trains/caches the BPE once per node

    def setup(self, stage: str | None = None) -> None:
        if self.train_dataset is not None:
            return
        train, val = self.records()
        self.train_dataset = self._encode(train, "train pool")
        self.train_dataset.all_tokens = self.loss_on == "all"
        self.val_dataset = self._encode(val, "validation set")
        log.info("skills data: pool %s, %d val per skill", self.pool_sizes, self.n_val_per_skill)

    # ---- mixture control (curriculum callbacks; set_mixture and friends: MixtureControl) ----------------------
    def set_difficulty_order(self, order: np.ndarray, samples_per_step: int, steps: int) -> None:
        """Example-level curriculum: pool indices easiest first; step i of `steps` sees the easiest i·H/steps."""
        self._order = (np.asarray(order, dtype=np.int64), int(samples_per_step), int(steps))

    # ---- loaders -------------------------------------------------------------------------------------
    def train_dataloader(self) -> DataLoader:
        self.setup("fit")
        rank, world = self._rank_world()
        order, block, steps = self._order if self._order is not None else (None, None, None)
        self.sampler = SkillSampler(self.pool_sizes, self.initial_weights, self.seed, rank, world,
                                    self._samples_consumed, schedule=self._schedule, order=order,
                                    pacing_block=block, pacing_steps=steps, min_available=self.batch_size)
        return DataLoader(
            self.train_dataset, batch_size=self.batch_size, sampler=self.sampler, num_workers=self.num_workers,
            collate_fn=PadCollator(self.tokenizer.pad_id),
            worker_init_fn=functools.partial(seed_worker, base_seed=self.seed, rank=rank),
            generator=loader_generator(self.seed),
            pin_memory=self.pin_memory, persistent_workers=self.num_workers > 0,
        )

    def val_dataloader(self) -> DataLoader:
        """All skills pooled (Lightning's val/loss = answer-token loss); per-skill numbers come from the callback."""
        self.setup("validate")
        return DataLoader(self.val_dataset, batch_size=self.val_batch_size, shuffle=False,
                          collate_fn=PadCollator(self.tokenizer.pad_id), generator=loader_generator(self.seed))

    def skill_val_batches(self, skill: int, rank: int = 0, world: int = 1) -> DataLoader:
        """This rank's shard (items rank, rank+W, ...) of skill `skill`'s validation questions."""
        self.setup("validate")
        idx = np.flatnonzero(self.val_dataset.skills == skill)[rank::world]
        subset = torch.utils.data.Subset(self.val_dataset, idx.tolist())
        return DataLoader(subset, batch_size=self.val_batch_size, shuffle=False,
                          collate_fn=PadCollator(self.tokenizer.pad_id), generator=loader_generator(self.seed))

    # ---- resume (the position itself: StreamPosition) -----------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        schedule = self.sampler.schedule_state() if self.sampler is not None else (
            self._schedule or [(0, [float(x) for x in self.initial_weights])])
        return {**self.position_state(), "schedule": schedule,
                "pool": {"sizes": [int(n) for n in self.pool_sizes], "fingerprint": self.pool_fingerprint()}}

    def pool_fingerprint(self) -> str:
        """A hash of the train pool in index order. The checkpoint's sample position and mixture address records
        by index, so a resumed run must find the same pool: another file, `n_train`, `pool` or seed would
        silently train on other records."""
        if self._fingerprint is None:
            h = hashlib.sha1()
            for r in self.records()[0]:
                h.update(f"{r['skill']}\x00{r['prompt']}\x00{r['response']}\x01".encode())
            self._fingerprint = h.hexdigest()[:16]
        return self._fingerprint

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        saved = state_dict.get("pool")  # absent in checkpoints written before it was recorded
        if saved and (list(saved["sizes"]) != [int(n) for n in self.pool_sizes]
                      or saved["fingerprint"] != self.pool_fingerprint()):
            raise DataError(
                f"the checkpoint was trained on another skills pool (sizes {list(saved['sizes'])}, fingerprint "
                f"{saved['fingerprint']}; this data config gives {[int(n) for n in self.pool_sizes]}, "
                f"{self.pool_fingerprint()}), and its sample position and mixture would point at other records. "
                "Resume with the data settings the run started with (data.task, data.n_train, data.pool, seed), "
                "or start a new run"
            )
        self.restore_position(state_dict)
        sched = state_dict.get("schedule")
        if sched:
            self._schedule = [(int(s), list(w)) for s, w in sched]
            self.initial_weights = check_weights(self._schedule[0][1], self.k)

    # ---- generation --------------------------------------------------------------------------------------
    def sample_prompts(self) -> list[str]:
        if self._sample_prompts:
            return list(self._sample_prompts)
        _, val = self.records()
        first = {}
        for r in val:  # the first validation prompt of every skill
            first.setdefault(r["skill"], r["prompt"])
        return [first[i] for i in range(self.k) if i in first]
