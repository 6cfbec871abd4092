"""Pack tokenized documents into fixed rows of `seq_len + 1` tokens without letting attention cross documents.

The stream is `doc_0 <eos> doc_1 <eos> ...`, cut into consecutive, non-overlapping rows of `seq_len + 1` tokens
(the last row is right-padded), so every token lands in exactly one row and rows concatenate back to the
stream. A row of `seq_len + 1` tokens gives `seq_len` (input, next-token label) pairs; the pair spanning two
rows is the only prediction lost per row.

Each row carries segment ids (1, 2, ... per document piece in the row; 0 = padding). From a row the item gets:
`input_ids = row[:-1]`, `labels = row[1:]` (pre-shifted), `labels = -100` where the label belongs to another
document than the input (the `<eos>` -> next document prediction, which a model that cannot attend across
documents cannot make) or is padding, `position_ids` restarting at 0 at each segment start (a document cut by
a row boundary restarts at 0 in the next row, matching what its attention can see).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from torch.utils.data import Dataset

IGNORE_INDEX = -100


@dataclass
class PackedRows:
    tokens: np.ndarray  # [N, T+1] int32
    segments: np.ndarray  # [N, T+1] int32, 1.. per document piece within the row, 0 = padding

    def __len__(self) -> int:
        return int(self.tokens.shape[0])


def pack_flat(flat: np.ndarray, lengths: np.ndarray, seq_len: int, eos_id: int, pad_id: int) -> PackedRows:
    """Pack documents given as one flat token array plus per-document lengths (no eos yet)."""
    if seq_len < 1:
        raise ValueError(f"seq_len must be >= 1, got {seq_len}")
    lengths = np.asarray(lengths, dtype=np.int64)
    n_docs = len(lengths)
    width = seq_len + 1
    with_eos = lengths + 1
    total = int(with_eos.sum())
    n_rows = max(1, -(-total // width))
    stream = np.full(n_rows * width, pad_id, dtype=np.int32)
    doc_of = np.full(n_rows * width, -1, dtype=np.int64)  # global document index per stream position
    if n_docs:
        ends = np.cumsum(with_eos)  # exclusive end of each doc (incl. eos) in the stream
        eos_pos = ends - 1
        is_text = np.ones(total, dtype=bool)
        is_text[eos_pos] = False
        stream[:total][is_text] = np.asarray(flat, dtype=np.int32)
        stream[eos_pos] = eos_id
        doc_of[:total] = np.repeat(np.arange(n_docs), with_eos)
    tokens = stream.reshape(n_rows, width)
    doc_of = doc_of.reshape(n_rows, width)
    first = np.where(doc_of[:, :1] >= 0, doc_of[:, :1], 0)
    segments = np.where(doc_of >= 0, doc_of - first + 1, 0).astype(np.int32)
    return PackedRows(tokens, segments)


def pack_documents(docs: list[list[int]], seq_len: int, eos_id: int, pad_id: int) -> PackedRows:
    """Pack a list of token-id documents (each gets one `<eos>` appended)."""
    lengths = np.array([len(d) for d in docs], dtype=np.int64)
    flat = np.fromiter((t for d in docs for t in d), dtype=np.int32, count=int(lengths.sum()))
    return pack_flat(flat, lengths, seq_len, eos_id, pad_id)


def token_column_arrays(column: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(flat tokens, per-row lengths) of an Arrow list<int> column, without a Python loop."""
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    lengths = pc.list_value_length(arr).to_numpy(zero_copy_only=False).astype(np.int64)
    flat = pc.list_flatten(arr).to_numpy(zero_copy_only=False).astype(np.int32)
    return flat, lengths


def rows_to_batch(tokens: np.ndarray, segments: np.ndarray) -> dict[str, torch.Tensor]:
    """Turn packed rows `[B, T+1]` into a batch under the contract (docs/contracts.md), all `[B, T]` long.

    Vectorised over the batch: a DataLoader that fetches a whole batch at once (`__getitems__`) pays the ~15 tensor
    ops once per batch instead of once per row (on 2 CPU cores the per-row version cost ~40 us x batch size).
    """
    tok = torch.from_numpy(np.ascontiguousarray(tokens, dtype=np.int64))  # [B, T+1]
    seg = torch.from_numpy(np.ascontiguousarray(segments, dtype=np.int64))  # [B, T+1]
    input_ids = tok[:, :-1]  # [B, T]
    labels = tok[:, 1:].clone()  # [B, T] pre-shifted
    seg_in, seg_lab = seg[:, :-1], seg[:, 1:]  # [B, T]
    labels[(seg_lab != seg_in) | (seg_lab == 0)] = IGNORE_INDEX
    t = seg_in.shape[1]
    idx = torch.arange(t).expand_as(seg_in)  # [B, T]
    starts = torch.ones_like(seg_in, dtype=torch.bool)
    starts[:, 1:] = seg_in[:, 1:] != seg_in[:, :-1]
    start_idx = torch.cummax(torch.where(starts, idx, torch.zeros_like(idx)), dim=1).values  # [B, T]
    position_ids = torch.where(seg_in > 0, idx - start_idx, torch.zeros_like(idx))
    return {
        "input_ids": input_ids,
        "labels": labels,
        "attention_mask": (seg_in > 0).long(),
        "position_ids": position_ids,
        "segment_ids": seg_in,
    }


def row_to_item(tokens: np.ndarray, segments: np.ndarray) -> dict[str, torch.Tensor]:
    """Turn one packed row (`seq_len + 1` tokens) into the batch-contract item (all `[T]` long)."""
    batch = rows_to_batch(np.asarray(tokens)[None], np.asarray(segments)[None])
    return {k: v[0] for k, v in batch.items()}


class Batch(dict):
    """A batch already collated by a dataset's `__getitems__`; `stack_items` passes it through unchanged."""


class PackedDataset(Dataset):
    """Map-style dataset over packed rows; items follow the batch contract (docs/contracts.md)."""

    def __init__(self, rows: PackedRows) -> None:
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return row_to_item(self.rows.tokens[i], self.rows.segments[i])

    def __getitems__(self, indices: list[int]) -> Batch:
        """The DataLoader's batched fetch: one vectorised conversion per batch (see `rows_to_batch`)."""
        idx = np.asarray(indices, dtype=np.int64)
        return Batch(rows_to_batch(self.rows.tokens[idx], self.rows.segments[idx]))
