"""`DataFormat`: everything that depends on what a record *is* (pretraining text, a prompt and its response, ...).

The data pipeline is format-blind: `src/data/sources.py` reads files and datasets, `LMDataModule` splits,
tokenizes with a cache, samples and resumes. At each step where the record's kind matters it asks the format
object, so adding a format (preference pairs, prompt-only RL data, fixed diffusion canvases) is one new file and
one `register_format` call, and touches no existing format. The steps, in pipeline order:

1. records: `columns`, `project` (validate one raw record, keep only its fields, one `DataError` naming the fix),
   `txt_field` (the field a .txt block fills; None = no .txt files), `check_columns` (a Hugging Face dataset's
   columns, before any row is read), `source_key` (what of a record is kept: part of the source fingerprint);
2. tokenizer: `training_texts` (the texts a BPE trains on, from the train split);
3. tokenization: `tokenize_fn` (a picklable batched `datasets.map` function) and `cache_key` (its cache-key parts;
   change its version string whenever the function's output changes);
4. dataset: `build_dataset` (tokenized split -> torch `Dataset`), `sampler_class`, `collate_fn`;
5. generation: `sample_prompt` (a prompt for sample generation from one record).

Field names are config keys (`data.text_field`, `data.prompt_field`, ...) carried by `Fields`; a format with
fields of its own reads them from `data.format_options` (`FormatSettings.options`).
"""

from __future__ import annotations

import abc
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import datasets
from torch.utils.data import Dataset

from src.data.errors import DataError
from src.data.sampler import InfiniteSampler
from src.data.transforms import StochasTokConfig

if TYPE_CHECKING:
    from src.data.sources import Locations
    from src.data.tokenizer import Tokenizer

MapFn = Callable[[dict[str, list[Any]], list[int]], dict[str, list[Any]]]  # (batch, indices) -> columns


@dataclass(frozen=True)
class Fields:
    """The format's name and the record field names (config keys data.format, data.text_field, ...).

    Its `__dict__` is part of source fingerprints and tokenization cache keys, so its attributes never change;
    a format with other fields takes their names from `data.format_options`.
    """

    format: str = "pretrain"  # a registered format name (src/data/formats/registry.py)
    text: str = "text"
    prompt: str = "prompt"
    response: str = "response"
    messages: str = "messages"


@dataclass(frozen=True)
class FormatSettings:
    """What a format may read from the data config besides its field names."""

    fields: Fields = field(default_factory=Fields)
    seq_len: int = 128  # tokens per row the model reads
    drop_long_prompts: bool = False  # data.drop_long_prompts (prompt/response formats)
    seed: int = 0  # data.seed (on-the-fly randomness such as StochasTok)
    cache_dir: Path = Path(".cache")
    stochastok: StochasTokConfig = field(default_factory=StochasTokConfig)
    options: Mapping[str, Any] = field(default_factory=dict)  # data.format_options: a new format's own keys


class DataFormat(abc.ABC):
    """One kind of record, from raw record to collated batch (module docstring: the steps in order)."""

    name: ClassVar[str]  # the data.format value
    # the train-time transforms this format applies to its training rows (src/data/transforms.py: "stochastok");
    # a configured transform the format does not list is refused by the data module with one error
    train_transforms: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, settings: FormatSettings) -> None:
        self.settings = settings
        self.fields = settings.fields

    # -- records ---------------------------------------------------------------------------------------------------
    @property
    @abc.abstractmethod
    def columns(self) -> list[str]:
        """The record fields kept (every record has all of them; unused ones may be None)."""

    @abc.abstractmethod
    def project(self, rec: Any, where: str) -> dict[str, Any]:
        """Validate one record and keep only `columns`; raise one DataError naming `where` and the fix."""

    @property
    def txt_field(self) -> str | None:
        """The field a block of a .txt file fills; None: this format reads no .txt files."""
        return None

    @property
    def record_kind(self) -> str:
        """How errors name this format's records ("SFT data must be .jsonl/...")."""
        return f"data.format={self.name}"

    def check_columns(self, columns: set[str], origin: str) -> None:
        """A Hugging Face dataset's columns, before any row is read: raise a DataError naming the config key."""
        if not set(self.columns) <= columns:
            raise DataError(
                f"{origin}: data.format={self.name} needs the columns {self.columns} (found columns: "
                f"{sorted(columns)}); set the field names or fix the dataset"
            )

    def source_key(self) -> Any:
        """JSON-able: what of a record this format keeps. Part of the source fingerprint (tokenized cache and the
        resume identity), so it must not change for an existing format."""
        key: dict[str, Any] = dict(vars(self.fields))
        if self.settings.options:
            key["options"] = dict(self.settings.options)
        return key

    # -- tokenizer -------------------------------------------------------------------------------------------------
    @abc.abstractmethod
    def training_texts(self, ds: datasets.Dataset) -> list[str]:
        """The texts a BPE tokenizer is trained on, from the (projected) train split."""

    # -- tokenization ----------------------------------------------------------------------------------------------
    @abc.abstractmethod
    def tokenize_fn(self, tok: Tokenizer, locations: Locations | None) -> MapFn:
        """A picklable batched `datasets.map(with_indices=True)` function (it runs in `num_proc` processes);
        `locations` name a bad record by file and line in its errors."""

    @abc.abstractmethod
    def cache_key(self, split_fingerprint: str, tok: Tokenizer) -> list[Any]:
        """The tokenized split's cache-key parts: a version string (bump it when `tokenize_fn`'s output changes),
        the split's fingerprint, the tokenizer's, and every option that changes the output."""

    # -- dataset ---------------------------------------------------------------------------------------------------
    @abc.abstractmethod
    def build_dataset(self, tokenized: datasets.Dataset, tok: Tokenizer, train: bool) -> Dataset:
        """The torch Dataset of a tokenized split (`train`: the training split, where on-the-fly augmentation
        such as StochasTok applies)."""

    def sampler_class(self, dataset: Dataset) -> type[InfiniteSampler]:
        """The train sampler's class: an `InfiniteSampler` (or a subclass with the same arguments)."""
        return InfiniteSampler

    @abc.abstractmethod
    def collate_fn(self, tok: Tokenizer) -> Callable[[Any], dict[str, Any]]:
        """The DataLoader `collate_fn` (picklable: workers receive it); batches follow docs/contracts.md."""

    # -- generation ------------------------------------------------------------------------------------------------
    @abc.abstractmethod
    def sample_prompt(self, rec: Mapping[str, Any], tok: Tokenizer) -> str:
        """A prompt for sample generation made from one (validation) record."""


# --- record validation helpers (the messages every format shares) ---------------------------------------------------
def with_end(ids: list[int], eos_id: int) -> list[int]:
    """`ids` followed by the end token, unless they already end with it: a response whose text ends in the end
    token's own text (`"Paris.</s>"`) gets no second one, as in TRL; a doubled end token would teach the model to
    emit two. Worked example (eos 2): [5, 6] -> [5, 6, 2]; [5, 6, 2] -> [5, 6, 2]; [] -> [2]."""
    return list(ids) if ids and ids[-1] == eos_id else [*ids, eos_id]


def record_keys(rec: Any, where: str) -> str:
    """The record's keys as JSON for error messages; a DataError if the record is not a mapping."""
    if not isinstance(rec, Mapping):
        raise DataError(f"{where}: expected a JSON object per record, got {type(rec).__name__}; fix the record")
    return json.dumps(sorted(str(k) for k in rec))


def require_str(rec: Mapping, field: str, where: str, keys: str, cfg_key: str) -> str:
    """`rec[field]`, which must be a string; the error names `cfg_key` (the config key of the field name)."""
    if field not in rec:
        raise DataError(
            f'{where}: field "{field}" is missing (found keys: {keys}); set {cfg_key}=... or fix the record'
        )
    val = rec[field]
    if not isinstance(val, str):
        raise DataError(
            f'{where}: field "{field}" must be a string, got {type(val).__name__} ({str(val)[:40]!r}); fix the record'
        )
    return val
