"""Batch assembly, once for every data module: right padding of variable-length items, stacking of fixed ones.

Every padded batch in tokensmith (SFT, skills pools, preference or prompt-only formats, task evaluation) is the
same shape, so it is built here and nowhere else:

- `input_ids` padded with the tokenizer's pad id, `labels` with -100 (no loss), any other per-token key with 0;
- `attention_mask` 1 on real tokens, `position_ids = arange(T) * attention_mask` (0..n-1, then 0 on padding);
- per-item scalars (e.g. `skill`) stacked to `[B]`.

Padding is on the right, so a real token's position id is its index, exactly as without padding. Labels follow
docs/contracts.md: already shifted (`labels[b, t]` is the token after `input_ids[b, :t+1]`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from src.data.packing import IGNORE_INDEX, Batch

_FIRST = ("input_ids", "labels", "attention_mask", "position_ids")  # the contract's keys lead every batch


def padded_length(n: int, pad_to_multiple_of: int | None = None) -> int:
    """`n` rounded up to a multiple of `pad_to_multiple_of` (None or 0: `n` itself)."""
    if not pad_to_multiple_of:
        return n
    return -(-n // pad_to_multiple_of) * pad_to_multiple_of


def pad_items(
    items: Sequence[Mapping[str, torch.Tensor]],
    pad_id: int,
    pad_to_multiple_of: int | None = None,
) -> dict[str, torch.Tensor]:
    """Right-pad items of variable length `L_i` to `T = max L_i` (rounded up to `pad_to_multiple_of`).

    Every item has `input_ids` `[L_i]`; 1-D keys (e.g. `labels`) must have the same length and are padded (labels
    with -100, others with 0); 0-D keys (e.g. `skill`) are stacked to `[B]`. Adds `attention_mask` and
    `position_ids` `[B, T]` long. Keys: the contract's four first, then the item's own, in the item's order.
    """
    lengths = [int(it["input_ids"].shape[0]) for it in items]
    t, b = padded_length(max(lengths), pad_to_multiple_of), len(items)
    first = items[0]
    out: dict[str, torch.Tensor] = {}
    attention_mask = torch.zeros((b, t), dtype=torch.long)  # [B, T]
    for k, v in first.items():
        if v.dim() == 0:
            continue
        fill = pad_id if k == "input_ids" else IGNORE_INDEX if k == "labels" else 0
        out[k] = torch.full((b, t), fill, dtype=v.dtype)  # [B, T]
    for i, (it, n) in enumerate(zip(items, lengths)):
        for k in out:
            if int(it[k].shape[0]) != n:
                raise ValueError(f"item {i}: {k!r} has {int(it[k].shape[0])} entries, input_ids {n}")
            out[k][i, :n] = it[k]
        attention_mask[i, :n] = 1
    out["attention_mask"] = attention_mask
    out["position_ids"] = (torch.arange(t).expand(b, t) * attention_mask).contiguous()  # [B, T], 0 on padding
    for k, v in first.items():
        if v.dim() == 0:
            out[k] = torch.stack([it[k] for it in items])  # [B]
    lead = [k for k in _FIRST if k in out]
    return {k: out[k] for k in lead + [k for k in out if k not in lead]}


class PadCollator:
    """`pad_items` as a picklable DataLoader `collate_fn` (DataLoader workers receive it by pickling)."""

    def __init__(self, pad_id: int, pad_to_multiple_of: int | None = None) -> None:
        self.pad_id, self.multiple = int(pad_id), pad_to_multiple_of

    def __call__(self, items: Sequence[Mapping[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        return pad_items(items, self.pad_id, self.multiple)


def pad_rows(
    ids_rows: Sequence[Sequence[int]],
    label_rows: Sequence[Sequence[int]],
    pad_id: int,
    pad_to_multiple_of: int | None = None,
) -> dict[str, torch.Tensor]:
    """Right-pad plain python rows: `ids_rows[i]` are the tokens the model reads, `label_rows[i]` (same length)
    the pre-shifted labels (-100 = not scored). For code that builds rows itself, e.g. scoring an option after a
    prompt: `ids = prompt + option`, row `ids[:-1]`, labels `[-100] * (len(prompt) - 1) + option`.

    Returns input_ids, labels, attention_mask, position_ids, all `[B, T]` long, T the longest row.
    """
    if len(ids_rows) != len(label_rows):
        raise ValueError(f"{len(ids_rows)} id rows but {len(label_rows)} label rows")
    items = [
        {"input_ids": torch.tensor(list(ids), dtype=torch.long), "labels": torch.tensor(list(lab), dtype=torch.long)}
        for ids, lab in zip(ids_rows, label_rows)
    ]
    return pad_items(items, pad_id, pad_to_multiple_of)


def stack_items(items: Sequence[dict[str, torch.Tensor]] | Batch) -> dict[str, torch.Tensor]:
    """Collate fixed-length packed items: every key becomes `[B, T]`. A `Batch` (built whole by the dataset's
    `__getitems__`, the DataLoader's batched fetch) is already collated and passes through."""
    if isinstance(items, Batch):
        return dict(items)
    return {k: torch.stack([it[k] for it in items]) for k in items[0]}
