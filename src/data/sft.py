"""Supervised fine-tuning records -> token ids with a per-token target mask, and the padding collator.

A record is `{prompt, response}` (field names configurable) or `{messages: [{role, content}, ...]}` rendered by
the tokenizer's chat template. Each piece is tokenized separately (prompt alone, exactly as at inference), so
the prompt/response boundary is a token boundary.

- prompt/response: `ids = enc(prompt) + enc(response) + [eos]`; targets are the response tokens and the eos.
- messages: every assistant turn is a target (its rendered text, incl. the template's end-of-turn marker);
  system/user turns and the generation prompt before each assistant turn are context.

Truncation (a record may have at most `seq_len + 1` tokens, giving `seq_len` input/label pairs): the tail is
cut, so a long response loses its end (and its eos). A record whose targets all fall beyond `seq_len + 1`
tokens (the prompt alone fills the row) is an error naming the fix, or dropped with `drop_long_prompts`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from src.data.errors import DataError
from src.data.packing import IGNORE_INDEX
from src.data.sources import Fields, Locations, locate
from src.data.tokenizer import Tokenizer

_PROBE = "\u2063tokensmith-content\u2063"  # stands in for a first assistant message's content


def _chat_segments(tok: Tokenizer, messages: list[dict[str, str]], where: str) -> list[tuple[str, bool]]:
    """Split a rendered chat into (text, is_target) pieces: assistant turns are targets."""
    hf = tok.hf
    if not getattr(hf, "chat_template", None):
        raise DataError(
            f"{where}: a messages record needs a tokenizer with a chat template, and this one has none; use "
            "prompt/response records or a pretrained tokenizer with a chat template (data.tokenizer.pretrained)"
        )
    segments: list[tuple[str, bool]] = []
    done = ""
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        if i:
            prefix = hf.apply_chat_template(messages[:i], tokenize=False, add_generation_prompt=True)
        else:  # the assistant speaks first: what the template puts before its content (an injected system
            # prompt, the assistant header) is context too; an empty conversation cannot be rendered, so locate it
            probe = hf.apply_chat_template([{**m, "content": _PROBE}], tokenize=False)
            prefix = probe[: probe.index(_PROBE)] if _PROBE in probe else ""
        full = hf.apply_chat_template(messages[: i + 1], tokenize=False)
        if not (prefix.startswith(done) and full.startswith(prefix)):
            raise DataError(
                f"{where}: the tokenizer's chat template does not render conversations prefix-consistently, so "
                "assistant turns cannot be located; use prompt/response records instead"
            )
        segments.append((prefix[len(done) :], False))
        segments.append((full[len(prefix) :], True))
        done = full
    return segments


def encode_sft(
    tok: Tokenizer, rec: dict[str, Any], fields: Fields, seq_len: int, where: str
) -> tuple[list[int], list[int]] | None:
    """(ids, target_mask) of one record, truncated to `seq_len + 1` tokens; None = too long, drop it."""
    msgs = rec.get(fields.messages)
    if msgs:
        pieces = _chat_segments(tok, msgs, where)
        ids: list[int] = []
        target: list[int] = []
        for text, is_target in pieces:
            piece = tok.encode(text) if text else []
            ids += piece
            target += [int(is_target)] * len(piece)
    else:
        prompt, response = rec.get(fields.prompt), rec.get(fields.response)
        if not isinstance(prompt, str) or not isinstance(response, str):
            raise DataError(
                f'{where}: "{fields.prompt}" and "{fields.response}" must be strings, got '
                f"{type(prompt).__name__} and {type(response).__name__}; fix the record"
            )
        p_ids = tok.encode(prompt)
        r_ids = tok.encode(response) + [tok.eos_id]
        ids = p_ids + r_ids
        target = [0] * len(p_ids) + [1] * len(r_ids)
    ids, target = ids[: seq_len + 1], target[: seq_len + 1]
    # target[0] is never a label (nothing precedes it), so a record needs a target at positions 1..seq_len
    if not any(target[1:]):
        return None
    return ids, target


class SFTTokenize:
    """Picklable batched `datasets.map` function (runs in `num_proc` worker processes)."""

    def __init__(
        self, tok: Tokenizer, fields: Fields, seq_len: int, drop_long_prompts: bool, locations: Locations | None = None
    ) -> None:
        self.tok, self.fields, self.seq_len, self.drop = tok, fields, seq_len, drop_long_prompts
        self.locations = locations  # names a bad record by file and line (src/data/sources.py)

    def __call__(self, batch: dict[str, list[Any]], indices: list[int]) -> dict[str, list[list[int]]]:
        out: dict[str, list[list[int]]] = {"input_ids": [], "target_mask": []}
        n = len(indices)
        for j in range(n):
            rec = {k: batch[k][j] for k in batch}
            where = locate(self.locations, indices[j])
            enc = encode_sft(self.tok, rec, self.fields, self.seq_len, where)
            if enc is None:
                if self.drop:
                    continue
                raise DataError(
                    f"{where}: the prompt alone fills data.seq_len={self.seq_len} tokens, leaving no response "
                    "token to train on; increase data.seq_len, shorten the prompt, or set "
                    "data.drop_long_prompts=true to skip such records"
                )
            out["input_ids"].append(enc[0])
            out["target_mask"].append(enc[1])
        return out


class SFTDataset(torch.utils.data.Dataset):
    """Items of variable length `L <= seq_len`: input_ids/labels (pre-shifted, -100 off-target)."""

    def __init__(self, ds: Any) -> None:
        self.ds = ds.with_format(None)

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        row = self.ds[int(i)]
        ids = torch.tensor(row["input_ids"], dtype=torch.long)  # [L+1]
        tgt = torch.tensor(row["target_mask"], dtype=torch.bool)  # [L+1]
        labels = ids[1:].clone()  # [L]
        labels[~tgt[1:]] = IGNORE_INDEX
        return {"input_ids": ids[:-1], "labels": labels}


class SFTCollator:
    """Right-pads a list of SFT items to the longest in the batch (`pad_to_multiple_of` optional)."""

    def __init__(self, pad_id: int, pad_to_multiple_of: int | None = None) -> None:
        self.pad_id, self.multiple = pad_id, pad_to_multiple_of

    def __call__(self, items: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        t = max(int(it["input_ids"].shape[0]) for it in items)
        if self.multiple:
            t = -(-t // self.multiple) * self.multiple
        b = len(items)
        input_ids = torch.full((b, t), self.pad_id, dtype=torch.long)  # [B, T]
        labels = torch.full((b, t), IGNORE_INDEX, dtype=torch.long)  # [B, T]
        attention_mask = torch.zeros((b, t), dtype=torch.long)  # [B, T]
        for i, it in enumerate(items):
            n = int(it["input_ids"].shape[0])
            input_ids[i, :n] = it["input_ids"]
            labels[i, :n] = it["labels"]
            attention_mask[i, :n] = 1
        position_ids = torch.arange(t).expand(b, t) * attention_mask  # [B, T], 0 on padding
        return {
            "input_ids": input_ids,
            "labels": labels,
            "attention_mask": attention_mask,
            "position_ids": position_ids.contiguous(),
        }
