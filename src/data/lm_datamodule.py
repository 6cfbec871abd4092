"""`LMDataModule`: causal-LM data of any format (src/data/formats/: packed pretraining rows, prompt-masked SFT, ...).

The module is format-blind: it loads the source, splits it, trains the tokenizer, tokenizes with a cache, samples
and resumes; what depends on the kind of record (fields, tokenization, dataset, collation) it asks the
`DataFormat` named by `data.format`.

Life cycle (Lightning): `prepare_data` (local rank 0 only) generates the corpus, trains/loads the tokenizer and
fills the tokenization cache; `setup` (every rank) loads from those caches and builds the datasets. Everything is
lazy and idempotent, so `.tokenizer` can be read before either (train.py needs vocab_size to build the model).

Resume: `state_dict()` saves the global number of samples consumed at the checkpoint (an optimizer-step
boundary, src/data/stream_position.py) and the identity of the data it indexes; `load_state_dict()` makes the
next `train_dataloader()` start the infinite sampler exactly there.

Skill mixture (`data.mixture`, set by the `curriculum=` configs): records with a skill (RL prompts) are then
sampled by skill under a mixture the curriculum callbacks change (src/data/skill_mixture.py); null (the default)
keeps the plain stream.
"""

from __future__ import annotations

import functools
import logging
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import datasets
import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from src.data.errors import DataError
from src.data.formats import DataFormat, Fields, FormatSettings, get_format
from src.data.skill_mixture import SkillMixing
from src.data.sources import LoadedSource, load_source, normalize_spec, to_plain
from src.data.stream_position import StreamPosition
from src.data.tokenized import cached_map
from src.data.tokenizer import Tokenizer, build_tokenizer
from src.data.transforms import STOCHASTOK, StochasTokConfig, tokenizer_fingerprint

log = logging.getLogger(__name__)


def seed_worker(worker_id: int, base_seed: int, rank: int) -> None:
    """Seed python/numpy/torch in a dataloader worker from (base seed, rank, worker id): distinct and reproducible."""
    s = int(np.random.SeedSequence([int(base_seed), int(rank), int(worker_id)]).generate_state(1)[0])
    random.seed(s)
    np.random.seed(s)
    torch.manual_seed(s)


def loader_generator(seed: int) -> torch.Generator:
    """A DataLoader's own generator. Without one, every new iterator draws its base seed from the *global* torch
    RNG; a resumed run creates one more iterator than the straight run did, so every later dropout mask (and any
    other global draw) would differ and resume would not be exact. Our workers are seeded by `seed_worker` and our
    samplers by (seed, rank, position), so this generator's draws decide nothing else."""
    return torch.Generator().manual_seed(int(seed))


def warn_trailing_whitespace(splits: list[LoadedSource], field: str) -> int:
    """One warning per dataset when prompts end in a space or a tab; returns their count.

    The prompt and the response are tokenized separately, so a prompt's trailing space becomes a token of its own
    and the response starts without the space a BPE word carries: "The capital of France is " + "Paris." scores
    `Paris` as a rare word-initial piece after a lone space token, far less likely than " Paris" after "is". TRL
    warns about the same mismatch. Only string prompts are counted (chat messages are rendered by
    the template). A final newline is not: byte-level BPE (GPT-2, Llama 3, SmolLM2) and SentencePiece split a newline
    from the next word anyway, so a prompt such as a chat template's "...assistant\n" tokenizes the same alone."""
    n = total = 0
    origin = splits[0].origin if splits else ""
    for split in splits:
        if field not in split.dataset.column_names:
            return 0
        for p in split.dataset[field]:
            if isinstance(p, str):
                total += 1
                n += p[-1:] in (" ", "\t")
    if n:
        log.warning("%s: %d of %d prompts end in a space or tab; the space becomes a token of its own and the response "
                    "starts without it (a rare word-initial token). Move the space to the start of the response "
                    "(\"... is\" + \" Paris.\"), as tokenizers and chat templates expect", origin, n, total)
    return n


class LMDataModule(StreamPosition, SkillMixing, L.LightningDataModule):
    """Causal-LM data. Batches follow docs/contracts.md (labels pre-shifted, -100 = no loss).

    pretrain batches: input_ids, labels, attention_mask, position_ids, segment_ids, all `[B, seq_len]` long.
    sft batches: input_ids, labels, attention_mask, position_ids, `[B, L]` long with L <= seq_len the longest
    record in the batch (right padding). Other formats: their own module in src/data/formats/.
    """

    def __init__(
        self,
        source: str | Mapping[str, Any],
        format: str = "pretrain",
        tokenizer: Mapping[str, Any] | None = None,
        seq_len: int = 128,
        batch_size: int = 16,
        num_workers: int = 0,
        val_fraction: float = 0.05,
        val_source: str | Mapping[str, Any] | None = None,
        seed: int = 0,
        cache_dir: str = ".cache",
        num_proc: int | None = None,
        sample_prompts: list[str] | None = None,
        text_field: str = "text",
        prompt_field: str = "prompt",
        response_field: str = "response",
        messages_field: str = "messages",
        drop_long_prompts: bool = False,
        val_batch_size: int | None = None,
        shuffle: bool = True,
        pin_memory: bool = False,
        stochastok: Mapping[str, Any] | None = None,
        format_options: Mapping[str, Any] | None = None,
        mixture: str | list[float] | None = None,
        skills_graph: list[list[float]] | None = None,
    ) -> None:
        super().__init__()
        self.source = normalize_spec(source)
        self.val_source = normalize_spec(val_source) if val_source else None
        format_cls = get_format(format)  # one DataError listing the valid names
        self.fields = Fields(format, text_field, prompt_field, response_field, messages_field)
        self.format = format
        self.tokenizer_cfg: dict[str, Any] = to_plain(tokenizer) if tokenizer else {"vocab_size": 512}
        if seq_len < 2:
            raise DataError(f"data.seq_len must be >= 2, got {seq_len}")
        if batch_size < 1:
            raise DataError(f"data.batch_size must be >= 1, got {batch_size}")
        if not 0.0 <= val_fraction < 1.0:
            raise DataError(f"data.val_fraction must be in [0, 1), got {val_fraction}")
        self.seq_len, self.batch_size, self.num_workers = int(seq_len), int(batch_size), int(num_workers)
        self.val_batch_size = int(val_batch_size or batch_size)
        self.val_fraction, self.seed = float(val_fraction), int(seed)
        self.cache_dir = Path(cache_dir)
        self.num_proc = num_proc
        self._sample_prompts = list(sample_prompts) if sample_prompts else None
        self.drop_long_prompts = bool(drop_long_prompts)
        self.shuffle, self.pin_memory = bool(shuffle), bool(pin_memory)
        self._samples_consumed = 0
        self._consumed_step: int | None = 0  # global step at which _samples_consumed was recorded
        self._restored_identity: str | None = None  # the checkpoint's data_identity(), checked once
        self._identity: str | None = None
        # StochasTok (src/data/stochastok.py): train rows are re-segmented on the fly; p = 0 is off
        self.stochastok = StochasTokConfig.from_cfg(stochastok)
        self.data_format: DataFormat = format_cls(FormatSettings(
            fields=self.fields, seq_len=self.seq_len, drop_long_prompts=self.drop_long_prompts, seed=self.seed,
            cache_dir=self.cache_dir, stochastok=self.stochastok, options=to_plain(format_options or {})))
        if self.stochastok.enabled and STOCHASTOK not in format_cls.train_transforms:
            raise DataError(
                f"data.stochastok.p={self.stochastok.p} applies to pretraining text (data.format=pretrain), not "
                f"{format!r}; set data.stochastok.p=0 (fine-tuning uses deterministic tokens, docs/stochastok.md)"
            )
        self._tokenizer: Tokenizer | None = None
        self._splits: tuple[LoadedSource, LoadedSource | None] | None = None
        self.train_dataset: Dataset | None = None
        self.val_dataset: Dataset | None = None
        # data.mixture: null = the plain stream; natural | uniform | weights = sample by skill (curricula)
        self._init_skill_mixing(to_plain(mixture), to_plain(skills_graph))

    # -- raw data ----------------------------------------------------------------------------------------------
    def _raw_splits(self) -> tuple[LoadedSource, LoadedSource | None]:
        """(train, val) raw records; val is a seeded random `val_fraction` of the source unless `val_source`."""
        if self._splits is not None:
            return self._splits
        src = load_source(self.source, self.data_format, self.cache_dir)
        if self.val_source is not None:
            val = load_source(self.val_source, self.data_format, self.cache_dir)
            self._splits = (src, val)
            return self._splits
        n = len(src.dataset)
        n_val = 0 if self.val_fraction == 0 else max(1, round(self.val_fraction * n))
        if n_val and n - n_val < 1:
            raise DataError(
                f"{src.origin}: {n} record(s) cannot be split into train and val with data.val_fraction="
                f"{self.val_fraction}; add data or set data.val_source=..."
            )
        perm = np.random.default_rng([self.seed, 7919]).permutation(n)
        val_idx, train_idx = np.sort(perm[:n_val]), np.sort(perm[n_val:])
        fp = f"{src.fingerprint}-seed{self.seed}-val{n_val}"
        locs = src.locations
        train = LoadedSource(src.dataset.select(train_idx), fp + "-train", src.origin, locs and locs.take(train_idx))
        val = LoadedSource(src.dataset.select(val_idx), fp + "-val", src.origin, locs and locs.take(val_idx))
        val = val if n_val else None
        self._splits = (train, val)
        return self._splits

    def _training_texts(self) -> list[str]:
        """Texts the BPE is trained on: the train split only (the format's texts: pretrain text, SFT turns...)."""
        return self.data_format.training_texts(self._raw_splits()[0].dataset)

    # -- tokenizer ---------------------------------------------------------------------------------------------
    @property
    def tokenizer(self) -> Tokenizer:
        """The tokenizer, built on first access (trains/loads the cached BPE, or loads a pretrained one)."""
        if self._tokenizer is None:
            self._tokenizer = build_tokenizer(self.tokenizer_cfg, self._training_texts, self.cache_dir)
        return self._tokenizer

    # -- datasets ----------------------------------------------------------------------------------------------
    def _tokenize(self, split: LoadedSource) -> datasets.Dataset:
        tok, fmt = self.tokenizer, self.data_format
        fn, key = fmt.tokenize_fn(tok, split.locations), fmt.cache_key(split.fingerprint, tok)
        try:
            return cached_map(split.dataset, fn, key, self.cache_dir, self.num_proc, f"tokenize {split.origin}")
        except DataError as e:  # the message names the record's file and line (split.locations) when known
            raise DataError(str(e) if split.locations is not None else f"{split.origin}: {e}") from None

    def _build(self, split: LoadedSource, expand: bool = False) -> Dataset:
        tok_ds = self._tokenize(split)
        if len(tok_ds) == 0:
            raise DataError(f"{split.origin}: no usable records left after tokenization (all dropped?)")
        return self.data_format.build_dataset(tok_ds, self.tokenizer, train=expand)

    def prepare_data(self) -> None:
        """Once per node: generate/load the corpus, train the tokenizer, fill the tokenization cache."""
        train, val = self._raw_splits()
        _ = self.tokenizer
        self._tokenize(train)
        if val is not None:
            self._tokenize(val)

    def setup(self, stage: str | None = None) -> None:
        if self.train_dataset is not None:
            return
        train, val = self._raw_splits()
        self.train_dataset = self._build(train, expand=True)
        self.val_dataset = self._build(val) if val is not None else None
        self._build_skill_view(train.origin)
        warn_trailing_whitespace([train] + ([val] if val is not None else []), self.fields.prompt)
        log.info(
            "data: %d train / %s val items (%s)",
            len(self.train_dataset),
            len(self.val_dataset) if self.val_dataset is not None else 0,
            self.format,
        )

    # -- loaders -----------------------------------------------------------------------------------------------
    def _collate(self) -> Any:
        return self.data_format.collate_fn(self.tokenizer)

    def train_dataloader(self) -> DataLoader:
        if self.train_dataset is None:
            self.setup("fit")
        self._check_restored_identity()
        rank, world = self._rank_world()
        dataset = self.train_dataset
        if self.samples_by_skill:  # a skill curriculum's mixture (src/data/skill_mixture.py)
            dataset, sampler = self.skill_sampler(rank, world, self._samples_consumed)
        else:
            sampler_cls = self.data_format.sampler_class(self.train_dataset)
            sampler = sampler_cls(
                len(self.train_dataset), self.seed, rank, world, self._samples_consumed, shuffle=self.shuffle
            )
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=sampler,
            num_workers=self.num_workers,
            collate_fn=self._collate(),
            worker_init_fn=functools.partial(seed_worker, base_seed=self.seed, rank=rank),
            generator=loader_generator(self.seed),
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
        )

    def val_dataloader(self) -> DataLoader | list:
        """Finite, deterministic (file order); [] when there is no val split. Not sharded (`use_distributed_sampler:
        false`): under DDP every rank evaluates the same batches, so the val loss equals a single process's."""
        if self.train_dataset is None:
            self.setup("validate")
        if self.val_dataset is None:
            return []
        return DataLoader(
            self.val_dataset,
            batch_size=self.val_batch_size,
            shuffle=False,
            num_workers=self.num_workers,
            collate_fn=self._collate(),
            generator=loader_generator(self.seed),
            pin_memory=self.pin_memory,
        )

    # -- resume (the position itself: StreamPosition) -----------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {**self.position_state(), "data": self.data_identity(), **self.mixture_state()}

    def data_identity(self) -> str | None:
        """What the stream position indexes: the train split (records, seed, val split), the tokenizer, seq_len
        and the number of rows. None before setup."""
        if self.train_dataset is None:
            return None
        if self._identity is None:  # fixed once set up; computed once, not at every checkpoint
            split = self._raw_splits()[0]
            self._identity = (f"{split.fingerprint}|{tokenizer_fingerprint(self.tokenizer)}|seq{self.seq_len}|"
                              f"rows{len(self.train_dataset)}")
        return self._identity

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.restore_position(state_dict)
        self.restore_mixture(state_dict)
        self._restored_identity = state_dict.get("data")  # absent in checkpoints written before it was recorded

    def _check_restored_identity(self) -> None:
        """A resumed run on other training data continues at the same sample count in *that* data: legitimate
        when meant (continued training on a new corpus), silent drift when not (an edited file, another seed or
        seq_len). Say so once; a warning, not an error, because the first case is a real use."""
        saved, now = self._restored_identity, self.data_identity()
        if saved and now and saved != now:
            log.warning(
                "the training data differs from the checkpoint's (%s, now %s; files compare by content): the run "
                "continues at sample %d of this data, not where the checkpointed run was in its own. If that is "
                "not meant, resume with the data settings the run started with (data.source, data.seed, "
                "data.seq_len, data.tokenizer)",
                saved, now, self._samples_consumed)
        self._restored_identity = None

    # -- generation ----------------------------------------------------------------------------------------------
    def sample_prompts(self) -> list[str]:
        """Short prompts for sample generation: configured ones, the task's own, or openings of val records."""
        if self._sample_prompts:
            return list(self._sample_prompts)
        if self.source.get("kind") == "stories":
            from src.data.tasks.stories import story_prompts

            return story_prompts()
        train, val = self._raw_splits()
        ds = (val or train).dataset.select(range(min(4, len((val or train).dataset))))
        return [self.data_format.sample_prompt(rec, self.tokenizer) for rec in ds]
