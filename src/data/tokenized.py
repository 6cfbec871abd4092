"""Tokenize a source dataset with `datasets.map`, cached under the cache dir by an explicit content key.

The key combines the source fingerprint, the tokenizer's full serialization and the format options, so a
cached Arrow file is reused only for exactly the same data and tokenizer. `new_fingerprint` is passed so that
`datasets` does not try to hash the (large) tokenizer object itself.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import datasets

from src.data.cache import Hasher
from src.data.errors import DataError
from src.data.formats.base import Fields
from src.data.sources import Locations, locate
from src.data.tokenizer import Tokenizer
from src.data.transforms import tokenizer_fingerprint

log = logging.getLogger(__name__)
__all__ = ["cached_map", "tokenizer_fingerprint"]


class TextTokenize:
    """Picklable batched map function: `text -> input_ids` (no specials; the eos is added when packing)."""

    def __init__(self, tok: Tokenizer, fields: Fields, locations: Locations | None = None) -> None:
        self.tok, self.fields, self.locations = tok, fields, locations

    def __call__(self, batch: dict[str, list[Any]], indices: list[int]) -> dict[str, list[list[int]]]:
        texts = batch[self.fields.text]
        for j, t in enumerate(texts):
            if not isinstance(t, str):
                raise DataError(
                    f'{locate(self.locations, indices[j])}: field "{self.fields.text}" must be a string, got '
                    f"{type(t).__name__}; fix the record"
                )
        return {"input_ids": self.tok.encode_batch(texts)}


def cached_map(
    ds: datasets.Dataset,
    fn: Callable,
    key_parts: list[Any],
    cache_dir: str | Path,
    num_proc: int | None,
    desc: str,
) -> datasets.Dataset:
    """`ds.map(fn, batched=True, with_indices=True)` written to `<cache_dir>/tokenized/<key>.arrow` and reused."""
    key = Hasher().update_json(key_parts).hexdigest()
    out_dir = Path(cache_dir) / "tokenized"
    out_dir.mkdir(parents=True, exist_ok=True)
    num_proc = num_proc if num_proc and num_proc > 1 and len(ds) >= 2 * num_proc else None
    return ds.map(
        fn,
        batched=True,
        with_indices=True,
        remove_columns=ds.column_names,
        num_proc=num_proc,
        cache_file_name=str(out_dir / f"{key}.arrow"),
        new_fingerprint=key,
        load_from_cache_file=True,
        desc=desc,
    )
