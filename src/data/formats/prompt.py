"""`prompt`: prompt-only records for reinforcement learning, `{prompt, answer, skill?}` -> batches of prompts.

RL objectives (method=grpo) sample their own completions, so a record is only the question and what a verifiable
reward needs to check an answer. The prompt is a string, or a chat (a list of `{role, content}` messages, as TRL's
conversational prompts): a chat is rendered through the tokenizer's chat template with the generation prompt, so
a chat model answers as its assistant, and that rendered text is the `prompt` the reward sees.

Field names: `data.prompt_field` (default `prompt`) and, in
`data.format_options`, `answer_field` (default `answer`, any JSON scalar, kept as text) and `skill_field` (default
`skill`, an optional integer such as the number of operands; -1 when absent).

A prompt is tokenized alone, with no end token (the model continues it). A prompt longer than `seq_len` tokens is
an error naming the fix, or dropped with `data.drop_long_prompts=true`.

Batches (docs/contracts.md, "prompt batches"): `prompt_input_ids`, `prompt_attention_mask` `[B, L]` long,
right-padded (the objective left-pads at generation time), `skill` `[B]` long, and the per-record metadata as
lists: `prompt` (text), `answer` (text).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import datasets
import torch
from torch.utils.data import Dataset

from src.data.errors import DataError
from src.data.formats.base import DataFormat, MapFn, record_keys, require_str
from src.data.formats.sft import chat_prompt_text, require_messages
from src.data.sources import Locations, locate
from src.data.tokenizer import Tokenizer
from src.data.transforms import tokenizer_fingerprint

PROMPT_PREFIX = "prompt_"  # batch keys of the prompt view: prompt_input_ids, prompt_attention_mask


class PromptTokenize:
    """Picklable batched `datasets.map` function: prompt ids plus the metadata columns, kept as they are."""

    def __init__(self, tok: Tokenizer, prompt_field: str, answer_field: str, skill_field: str, seq_len: int,
                 drop_long: bool, locations: Locations | None = None) -> None:
        self.tok, self.seq_len, self.drop = tok, seq_len, drop_long
        self.prompt_field, self.answer_field, self.skill_field = prompt_field, answer_field, skill_field
        self.locations = locations

    def __call__(self, batch: dict[str, list[Any]], indices: list[int]) -> dict[str, list[Any]]:
        out: dict[str, list[Any]] = {"input_ids": [], "prompt": [], "answer": [], "skill": []}
        for j, idx in enumerate(indices):
            prompt = batch[self.prompt_field][j]
            if not isinstance(prompt, str):  # a chat
                prompt = chat_prompt_text(self.tok, prompt, locate(self.locations, idx))
            ids = self.tok.encode(prompt)
            if not ids or len(ids) > self.seq_len:
                if self.drop:
                    continue
                raise DataError(
                    f"{locate(self.locations, idx)}: the prompt has {len(ids)} tokens, outside 1..data.seq_len="
                    f"{self.seq_len}; increase data.seq_len, fix the record, or set data.drop_long_prompts=true"
                )
            out["input_ids"].append(ids)
            out["prompt"].append(prompt)
            out["answer"].append(batch[self.answer_field][j])
            out["skill"].append(batch[self.skill_field][j])
        return out


class PromptDataset(Dataset):
    """Items: `prompt_input_ids` [L] long, `skill` [] long, `prompt` and `answer` text."""

    def __init__(self, ds: datasets.Dataset) -> None:
        self.ds = ds.with_format(None)

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int) -> dict[str, Any]:
        row = self.ds[int(i)]
        return {"prompt_input_ids": torch.tensor(row["input_ids"], dtype=torch.long),
                "skill": torch.tensor(int(row["skill"]), dtype=torch.long),
                "prompt": row["prompt"], "answer": row["answer"]}


class PromptCollator:
    """Right-pads prompts to the batch's longest: see the module docstring for the keys."""

    def __init__(self, pad_id: int) -> None:
        self.pad_id = int(pad_id)

    def __call__(self, items: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        width = max(int(it["prompt_input_ids"].shape[0]) for it in items)
        ids = torch.full((len(items), width), self.pad_id, dtype=torch.long)  # [B, L]
        mask = torch.zeros_like(ids)  # [B, L]
        for i, it in enumerate(items):
            n = int(it["prompt_input_ids"].shape[0])
            ids[i, :n], mask[i, :n] = it["prompt_input_ids"], 1
        return {f"{PROMPT_PREFIX}input_ids": ids, f"{PROMPT_PREFIX}attention_mask": mask,
                "skill": torch.stack([it["skill"] for it in items]),
                "prompt": [it["prompt"] for it in items], "answer": [it["answer"] for it in items]}


class PromptFormat(DataFormat):
    """Prompt-only RL records (module docstring)."""

    name = "prompt"

    @property
    def answer_field(self) -> str:
        return str(self.settings.options.get("answer_field", "answer"))

    @property
    def skill_field(self) -> str:
        return str(self.settings.options.get("skill_field", "skill"))

    # -- records ---------------------------------------------------------------------------------------------------
    @property
    def columns(self) -> list[str]:
        return [self.fields.prompt, self.answer_field, self.skill_field]

    @property
    def record_kind(self) -> str:
        return "prompt-only RL"

    def project(self, rec: Any, where: str) -> dict[str, Any]:
        keys = record_keys(rec, where)
        if isinstance(rec.get(self.fields.prompt), list):  # a chat
            prompt = require_messages(rec[self.fields.prompt], self.fields.prompt, where, need_assistant=False)
        else:
            prompt = require_str(rec, self.fields.prompt, where, keys, "data.prompt_field")
        a, s = self.answer_field, self.skill_field
        if a not in rec or rec[a] is None:
            raise DataError(f'{where}: field "{a}" is missing (found keys: {keys}); a prompt record needs the answer '
                            "its reward checks (set data.format_options.answer_field=... or fix the record)")
        answer = rec[a]
        if isinstance(answer, (dict, list)):
            raise DataError(f'{where}: field "{a}" must be a string or number, got {json.dumps(answer)[:40]}')
        skill = rec.get(s)
        if skill is None:
            skill = -1
        elif isinstance(skill, bool) or not isinstance(skill, int):
            raise DataError(f'{where}: field "{s}" must be an integer (e.g. the number of operands), got '
                            f"{skill!r}; fix the record or drop the field")
        return {self.fields.prompt: prompt, a: str(answer), s: int(skill)}

    def check_columns(self, columns: set[str], origin: str) -> None:
        need = {self.fields.prompt, self.answer_field}
        if not need <= columns:
            raise DataError(f"{origin}: data.format=prompt needs the columns {sorted(need)} (found columns: "
                            f"{sorted(columns)}); set data.prompt_field / data.format_options.answer_field")

    # -- tokenizer and tokenization --------------------------------------------------------------------------------
    def training_texts(self, ds: datasets.Dataset) -> list[str]:
        return [p if isinstance(p, str) else "\n".join(m["content"] for m in p) for p in ds[self.fields.prompt]]

    def tokenize_fn(self, tok: Tokenizer, locations: Locations | None) -> MapFn:
        s = self.settings
        return PromptTokenize(tok, self.fields.prompt, self.answer_field, self.skill_field, s.seq_len,
                              s.drop_long_prompts, locations)

    def cache_key(self, split_fingerprint: str, tok: Tokenizer) -> list[Any]:
        s = self.settings
        return ["prompt-v1", split_fingerprint, tokenizer_fingerprint(tok), self.columns, s.seq_len,
                s.drop_long_prompts]

    # -- dataset ---------------------------------------------------------------------------------------------------
    def build_dataset(self, tokenized: datasets.Dataset, tok: Tokenizer, train: bool) -> Dataset:
        return PromptDataset(tokenized)

    def collate_fn(self, tok: Tokenizer) -> Callable[[Any], dict[str, Any]]:
        return PromptCollator(tok.pad_id)

    # -- generation ------------------------------------------------------------------------------------------------
    def sample_prompt(self, rec: Mapping[str, Any], tok: Tokenizer) -> str:
        return chat_prompt_text(tok, rec[self.fields.prompt], "a sample prompt")
