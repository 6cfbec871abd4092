"""`sft`: supervised fine-tuning records -> token ids with a per-token target mask, right-padded batches.

A record is `{prompt, response}` (field names: data.prompt_field / data.response_field) or `{messages: [{role,
content}, ...]}` (data.messages_field) rendered by the tokenizer's chat template. Each piece is tokenized
separately (prompt alone, exactly as at inference), so the prompt/response boundary is a token boundary.

- prompt/response: `ids = enc(prompt) + enc(response) + [eos]`; targets are the response tokens and the eos.
- messages: every assistant turn is a target (its rendered text, incl. the template's end-of-turn marker);
  system/user turns and the generation prompt before each assistant turn are context.

Truncation (a record may have at most `seq_len + 1` tokens, giving `seq_len` input/label pairs): the tail is
cut, so a long response loses its end (and its eos). A record whose targets all fall beyond `seq_len + 1`
tokens (the prompt alone fills the row) is an error naming the fix, or dropped with `drop_long_prompts`.

Batches: input_ids, labels, attention_mask, position_ids `[B, L]` long, L <= seq_len the longest record in the
batch (src/data/collate.py).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

import datasets
import torch
from torch.utils.data import Dataset

from src.data.collate import PadCollator
from src.data.errors import DataError
from src.data.formats.base import DataFormat, Fields, MapFn, record_keys, require_str, with_end
from src.data.packing import IGNORE_INDEX
from src.data.sources import Locations, locate
from src.data.tokenizer import Tokenizer
from src.data.transforms import tokenizer_fingerprint

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
        r_ids = with_end(tok.encode(response), tok.eos_id)
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


def require_messages(val: Any, field: str, where: str, need_assistant: bool = True) -> list[dict[str, str]]:
    """A chat: a non-empty list of {role, content} strings with at least one assistant turn (the targets) unless
    `need_assistant` is false (a preference record's prompt)."""
    if not isinstance(val, list) or not val:
        raise DataError(f'{where}: field "{field}" must be a non-empty list of {{role, content}} messages')
    out = []
    for i, m in enumerate(val):
        if not (isinstance(m, Mapping) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)):
            raise DataError(
                f'{where}: {field}[{i}] must be {{"role": str, "content": str}}, got {json.dumps(m)[:80]}; '
                "fix the record"
            )
        out.append({"role": m["role"], "content": m["content"]})
    if need_assistant and not any(m["role"] == "assistant" for m in out):
        raise DataError(f'{where}: "{field}" has no assistant message, so there is nothing to train on')
    return out


def chat_prompt_text(tok: Tokenizer, prompt: str | list[dict[str, str]], where: str) -> str:
    """A text prompt as it is; a chat rendered by the tokenizer's chat template up to the assistant's turn."""
    if isinstance(prompt, str):
        return prompt
    if not getattr(tok.hf, "chat_template", None):
        raise DataError(f"{where}: a chat prompt needs a tokenizer with a chat template, and this one has none; use "
                        "text prompts or a pretrained tokenizer with a chat template (data.tokenizer.pretrained)")
    return tok.hf.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)


def user_turn_text(tok: Tokenizer, question: str, where: str) -> str:
    """`question` asked as one user turn through the tokenizer's chat template, up to the assistant's answer: how a
    chat model is asked a plain-text task question (the chat task evaluations, the cDPO recipe's `task.chat`)."""
    return chat_prompt_text(tok, [{"role": "user", "content": question}], where)


class SFTFormat(DataFormat):
    """Prompt-masked fine-tuning records, one per row, right-padded per batch (module docstring)."""

    name = "sft"

    # -- records ---------------------------------------------------------------------------------------------------
    @property
    def columns(self) -> list[str]:
        f = self.fields
        return [f.prompt, f.response, f.messages]

    @property
    def record_kind(self) -> str:
        return "SFT"

    def project(self, rec: Any, where: str) -> dict[str, Any]:
        f = self.fields
        keys = record_keys(rec, where)
        if rec.get(f.messages) is not None:
            return {f.prompt: None, f.response: None, f.messages: require_messages(rec[f.messages], f.messages, where)}
        if f.prompt not in rec and f.response not in rec:
            raise DataError(
                f'{where}: SFT record has neither "{f.messages}" nor "{f.prompt}"/"{f.response}" '
                f"(found keys: {keys}); set data.prompt_field/data.response_field or data.messages_field=..., "
                "or fix the record"
            )
        return {
            f.prompt: require_str(rec, f.prompt, where, keys, "data.prompt_field"),
            f.response: require_str(rec, f.response, where, keys, "data.response_field"),
            f.messages: None,
        }

    def check_columns(self, columns: set[str], origin: str) -> None:
        f = self.fields
        if f.messages not in columns and not {f.prompt, f.response} <= columns:
            raise DataError(
                f'{origin}: SFT needs a "{f.messages}" column or "{f.prompt}"+"{f.response}" columns '
                f"(found columns: {sorted(columns)}); set data.messages_field / data.prompt_field / "
                "data.response_field"
            )

    # -- tokenizer and tokenization --------------------------------------------------------------------------------
    def training_texts(self, ds: datasets.Dataset) -> list[str]:
        """Prompts and responses, or every message's content."""
        f = self.fields
        texts: list[str] = []
        cols = set(ds.column_names)
        for rec in ds:
            if f.messages in cols and rec.get(f.messages):
                texts += [m["content"] for m in rec[f.messages]]
            else:
                texts += [rec[f.prompt], rec[f.response]]
        return texts

    def tokenize_fn(self, tok: Tokenizer, locations: Locations | None) -> MapFn:
        s = self.settings
        return SFTTokenize(tok, self.fields, s.seq_len, s.drop_long_prompts, locations)

    def cache_key(self, split_fingerprint: str, tok: Tokenizer) -> list[Any]:
        s = self.settings
        return ["sft-v2", split_fingerprint, tokenizer_fingerprint(tok), self.fields.__dict__, s.seq_len,
                s.drop_long_prompts]

    # -- dataset ---------------------------------------------------------------------------------------------------
    def build_dataset(self, tokenized: datasets.Dataset, tok: Tokenizer, train: bool) -> Dataset:
        return SFTDataset(tokenized)

    def collate_fn(self, tok: Tokenizer) -> Callable[[Any], dict[str, Any]]:
        return PadCollator(tok.pad_id)

    # -- generation ------------------------------------------------------------------------------------------------
    def sample_prompt(self, rec: Mapping[str, Any], tok: Tokenizer) -> str:
        """The prompt, or the chat up to its last assistant turn with the generation prompt."""
        f = self.fields
        if rec.get(f.messages):
            msgs = rec[f.messages]
            last = max(i for i, m in enumerate(msgs) if m["role"] == "assistant")
            return chat_prompt_text(tok, msgs[:last], "a sample prompt")
        return rec[f.prompt]
