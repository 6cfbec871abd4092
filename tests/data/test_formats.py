"""Data formats as plug-ins (src/data/formats) and the one collate module (src/data/collate.py).

The toy format below is defined and registered here, in the test: that it reaches a batch through `LMDataModule`
shows that adding a format touches no existing file.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import datasets
import pytest
import torch
from torch.utils.data import Dataset

from src.data.collate import PadCollator, pad_items, pad_rows, padded_length
from src.data.errors import DataError
from src.data.formats import (
    DataFormat,
    format_names,
    get_format,
    record_keys,
    register_format,
    require_str,
    unregister_format,
)
from src.data.lm_datamodule import LMDataModule
from src.data.packing import IGNORE_INDEX

TEXTS = [f"the cat number {i} sat on the mat and looked at the dog" for i in range(24)]


# --- a toy format: shouted text, one record per row, right-padded --------------------------------------------------
class UpperTokenize:
    """Picklable map function: `text.upper()` -> ids + eos, truncated to `seq_len + 1`."""

    def __init__(self, tok: Any, field: str, seq_len: int) -> None:
        self.tok, self.field, self.seq_len = tok, field, seq_len

    def __call__(self, batch: dict[str, list[Any]], indices: list[int]) -> dict[str, list[list[int]]]:
        ids = self.tok.encode_batch([t.upper() for t in batch[self.field]])
        return {"input_ids": [(x + [self.tok.eos_id])[: self.seq_len + 1] for x in ids]}


class UpperRows(Dataset):
    def __init__(self, ds: datasets.Dataset) -> None:
        self.rows = ds["input_ids"]

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        ids = torch.tensor(self.rows[int(i)], dtype=torch.long)  # [L+1]
        return {"input_ids": ids[:-1], "labels": ids[1:], "n_tokens": torch.tensor(len(ids) - 1)}


class UpperFormat(DataFormat):
    """Records `{text}`; trains on the text upper-cased. Its only option: `min_chars` (data.format_options)."""

    name = "upper_test"

    @property
    def columns(self) -> list[str]:
        return [self.fields.text]

    def project(self, rec: Any, where: str) -> dict[str, Any]:
        text = require_str(rec, self.fields.text, where, record_keys(rec, where), "data.text_field")
        if len(text) < int(self.settings.options.get("min_chars", 1)):
            raise DataError(f"{where}: too short; fix the record")
        return {self.fields.text: text}

    def training_texts(self, ds: datasets.Dataset) -> list[str]:
        return [t.upper() for t in ds[self.fields.text]]

    def tokenize_fn(self, tok: Any, locations: Any) -> Callable:
        return UpperTokenize(tok, self.fields.text, self.settings.seq_len)

    def cache_key(self, split_fingerprint: str, tok: Any) -> list[Any]:
        from src.data.tokenized import tokenizer_fingerprint

        return ["upper-test-v1", split_fingerprint, tokenizer_fingerprint(tok), self.settings.seq_len]

    def build_dataset(self, tokenized: datasets.Dataset, tok: Any, train: bool) -> Dataset:
        return UpperRows(tokenized)

    def collate_fn(self, tok: Any) -> Callable:
        return PadCollator(tok.pad_id, pad_to_multiple_of=4)

    def sample_prompt(self, rec: Mapping[str, Any], tok: Any) -> str:
        return rec[self.fields.text].upper()[:10]


@pytest.fixture
def upper() -> type[DataFormat]:
    register_format(UpperFormat)
    yield UpperFormat
    unregister_format(UpperFormat.name)


# --- (a) the registry ------------------------------------------------------------------------------------------------
def test_registry_lists_the_builtins_and_names_them_for_an_unknown_format(tmp_path) -> None:
    assert {"pretrain", "sft", "preference", "canvas"} <= set(format_names())
    assert get_format("pretrain").name == "pretrain" and get_format("sft").name == "sft"
    names = r"'canvas', 'preference', 'pretrain', 'prompt', 'sft'"
    with pytest.raises(DataError, match=rf"data.format must be one of {names}.*got 'chat'"):
        get_format("chat")
    with pytest.raises(DataError, match=r"data.format must be one of .*'pretrain'.*'sft'"):
        LMDataModule(source={"kind": "records", "records": [{"text": "a"}]}, format="chat", cache_dir=str(tmp_path))
    with pytest.raises(DataError, match="cannot be imported"):
        get_format("no_such_module:Format")


def test_register_refuses_to_take_a_name_silently(upper) -> None:
    assert "upper_test" in format_names() and get_format("upper_test") is UpperFormat
    clash = type("Clash", (UpperFormat,), {"name": "sft"})
    with pytest.raises(ValueError, match="already registered"):
        register_format(clash)
    assert get_format("sft").__name__ == "SFTFormat"


# --- (b) a new format flows through LMDataModule, no src file edited ------------------------------------------------
def test_a_format_registered_outside_src_reaches_a_batch(upper, tmp_path) -> None:
    recs = [{"text": t, "extra": i} for i, t in enumerate(TEXTS)]
    dm = LMDataModule(source={"kind": "records", "records": recs}, format="upper_test", tokenizer={"vocab_size": 280},
                      seq_len=16, batch_size=3, val_fraction=0.25, seed=0, cache_dir=str(tmp_path))
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert list(batch) == ["input_ids", "labels", "attention_mask", "position_ids", "n_tokens"]
    b, t = batch["input_ids"].shape
    assert b == 3 and t % 4 == 0 and t <= 16  # pad_to_multiple_of=4
    n = batch["n_tokens"]  # [B]
    assert batch["attention_mask"].sum(1).tolist() == n.tolist()
    for i in range(b):  # labels are the next tokens; the text the model reads is upper-cased
        k = int(n[i])
        assert batch["labels"][i, : k - 1].tolist() == batch["input_ids"][i, 1:k].tolist()
        text = dm.tokenizer.decode(batch["input_ids"][i, :k].tolist())
        assert text == text.upper() and "CAT NUMBER" in text
    assert dm.sample_prompts()[0].isupper()
    with pytest.raises(DataError, match="record 0: too short"):
        LMDataModule(source={"kind": "records", "records": recs}, format="upper_test", cache_dir=str(tmp_path),
                     format_options={"min_chars": 10_000})._raw_splits()
    with pytest.raises(DataError, match="data.stochastok.p=0.1 applies to pretraining"):
        LMDataModule(source={"kind": "records", "records": recs}, format="upper_test", stochastok={"p": 0.1})


def test_a_format_can_be_named_by_its_import_path(tmp_path) -> None:
    dm = LMDataModule(source={"kind": "records", "records": [{"text": t} for t in TEXTS]},
                      format="tests.data.test_formats:UpperFormat", tokenizer={"vocab_size": 280}, seq_len=8,
                      batch_size=2, val_fraction=0, cache_dir=str(tmp_path))
    assert isinstance(dm.data_format, UpperFormat)
    assert next(iter(dm.train_dataloader()))["input_ids"].shape[0] == 2


# --- (c) the collate module ------------------------------------------------------------------------------------------
def _item(ids: list[int], labels: list[int], **scalars: int) -> dict[str, torch.Tensor]:
    return {"input_ids": torch.tensor(ids), "labels": torch.tensor(labels),
            **{k: torch.tensor(v) for k, v in scalars.items()}}


def test_pad_items_right_pads_and_stacks_scalars() -> None:
    batch = pad_items([_item([5, 6, 7], [6, 7, 8], skill=2), _item([9], [IGNORE_INDEX], skill=0)], pad_id=1)
    assert list(batch) == ["input_ids", "labels", "attention_mask", "position_ids", "skill"]
    assert batch["input_ids"].tolist() == [[5, 6, 7], [9, 1, 1]]
    assert batch["labels"].tolist() == [[6, 7, 8], [IGNORE_INDEX] * 3]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["position_ids"].tolist() == [[0, 1, 2], [0, 0, 0]]
    assert batch["skill"].tolist() == [2, 0] and batch["skill"].shape == (2,)
    assert all(v.dtype == torch.long for v in batch.values())


def test_pad_to_multiple_of() -> None:
    assert [padded_length(n, 8) for n in (1, 8, 9)] == [8, 8, 16] and padded_length(5, None) == 5
    batch = PadCollator(0, pad_to_multiple_of=4)([_item([3] * 5, [4] * 5)])
    assert batch["input_ids"].tolist() == [[3] * 5 + [0] * 3]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 3, 4, 0, 0, 0]]
    assert batch["labels"][0, 5:].tolist() == [IGNORE_INDEX] * 3


def test_pad_rows_matches_the_option_scoring_layout() -> None:
    """`pad_rows` builds what src/callbacks/task_eval.py's option scoring builds inline: row `ids[:-1]`, labels
    only on the option's tokens."""
    pad = 0
    rows = [([4, 5, 6, 7, 8], 2), ([4, 9], 1)]  # (prompt + option ids, number of prompt tokens)
    ids_rows = [ids[:-1] for ids, _ in rows]
    label_rows = [[IGNORE_INDEX] * (n - 1) + ids[n:] for ids, n in rows]
    batch = pad_rows(ids_rows, label_rows, pad)
    t = max(len(ids) for ids, _ in rows) - 1  # the inline reference
    inp = torch.full((2, t), pad, dtype=torch.long)
    lab = torch.full((2, t), IGNORE_INDEX, dtype=torch.long)
    att = torch.zeros((2, t), dtype=torch.long)
    for i, (ids, n) in enumerate(rows):
        x = torch.tensor(ids)
        inp[i, : len(ids) - 1], att[i, : len(ids) - 1] = x[:-1], 1
        lab[i, n - 1 : len(ids) - 1] = x[n:]
    assert torch.equal(batch["input_ids"], inp) and torch.equal(batch["labels"], lab)
    assert torch.equal(batch["attention_mask"], att)
    assert batch["position_ids"].tolist() == [[0, 1, 2, 3], [0, 0, 0, 0]]
    with pytest.raises(ValueError, match="label rows"):
        pad_rows(ids_rows, label_rows[:1], pad)
