"""`pretrain`: documents of text, packed into rows of `seq_len + 1` tokens (docs/data.md, "Packing").

Records are `{data.text_field: str}`; .txt files are read too (one block of text per record). Documents are
tokenized without specials and packed by src/data/packing.py (segment and position ids restart at every
document). With `data.stochastok.p > 0` the train rows are re-segmented on the fly by src/data/stochastok.py
(rows get headroom for the expansion; the sampler tags each index with its epoch for fresh splits per epoch).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import datasets
from torch.utils.data import Dataset

from src.data.collate import stack_items
from src.data.errors import DataError
from src.data.formats.base import DataFormat, MapFn, record_keys, require_str
from src.data.packing import PackedDataset, pack_flat, token_column_arrays
from src.data.sampler import InfiniteSampler
from src.data.stochastok import EpochTaggedSampler, SplitTable, StochasTokPackedDataset, rows_with_headroom
from src.data.tokenized import TextTokenize
from src.data.transforms import STOCHASTOK, tokenizer_fingerprint

if TYPE_CHECKING:
    from src.data.sources import Locations
    from src.data.tokenizer import Tokenizer


class PretrainFormat(DataFormat):
    """Packed causal-LM pretraining; batches: input_ids, labels, attention_mask, position_ids, segment_ids, all
    `[B, seq_len]` long."""

    name = "pretrain"
    train_transforms = frozenset({STOCHASTOK})

    # -- records ---------------------------------------------------------------------------------------------------
    @property
    def columns(self) -> list[str]:
        return [self.fields.text]

    def project(self, rec: Any, where: str) -> dict[str, Any]:
        keys = record_keys(rec, where)
        return {self.fields.text: require_str(rec, self.fields.text, where, keys, "data.text_field")}

    @property
    def txt_field(self) -> str | None:
        return self.fields.text

    def check_columns(self, columns: set[str], origin: str) -> None:
        if self.fields.text not in columns:
            raise DataError(
                f'{origin}: field "{self.fields.text}" is missing (found columns: {sorted(columns)}); '
                "set data.text_field=..."
            )

    # -- tokenizer and tokenization --------------------------------------------------------------------------------
    def training_texts(self, ds: datasets.Dataset) -> list[str]:
        return list(ds[self.fields.text])

    def tokenize_fn(self, tok: Tokenizer, locations: Locations | None) -> MapFn:
        return TextTokenize(tok, self.fields, locations)

    def cache_key(self, split_fingerprint: str, tok: Tokenizer) -> list[Any]:
        return ["pretrain-v1", split_fingerprint, tokenizer_fingerprint(tok), self.fields.text]

    # -- dataset ---------------------------------------------------------------------------------------------------
    def build_dataset(self, tokenized: datasets.Dataset, tok: Tokenizer, train: bool) -> Dataset:
        s = self.settings
        flat, lengths = token_column_arrays(tokenized.data.column("input_ids"))
        if train and s.stochastok.enabled:  # expansion first, then the row must fit: rows get headroom
            rows = rows_with_headroom(flat, lengths, s.seq_len, s.stochastok.p, tok.eos_id, tok.pad_id)
            table = SplitTable.load_or_build(tok, s.cache_dir)
            return StochasTokPackedDataset(rows, table, s.stochastok.p, s.seed, s.seq_len, tok.pad_id)
        return PackedDataset(pack_flat(flat, lengths, s.seq_len, tok.eos_id, tok.pad_id))

    def sampler_class(self, dataset: Dataset) -> type[InfiniteSampler]:
        # StochasTok items are keyed (index, epoch): fresh splits every epoch
        return EpochTaggedSampler if isinstance(dataset, StochasTokPackedDataset) else InfiniteSampler

    def collate_fn(self, tok: Tokenizer) -> Callable[[Any], dict[str, Any]]:
        return stack_items

    # -- generation ------------------------------------------------------------------------------------------------
    def sample_prompt(self, rec: Mapping[str, Any], tok: Tokenizer) -> str:
        return " ".join(rec[self.fields.text].split()[:4])
