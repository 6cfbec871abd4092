"""Preference pairs for DPO-family objectives: a prompt with a chosen and a rejected response.

Records (field names: `data.prompt_field`, and `data.format_options.chosen_field` / `rejected_field`):
- plain text: `{"prompt": str, "chosen": str, "rejected": str}`; each response is followed by the end token;
- chat: `{"prompt": [messages], "chosen": [assistant messages], "rejected": [assistant messages]}`, rendered with
  the tokenizer's chat template: the prompt with its generation prompt, each response as the template continues
  the conversation (its end-of-turn marker included).

Each response is tokenized after the prompt exactly as at inference (prompt alone, then the response), so both
views share the prompt tokens and the labels are exactly the response tokens (plus the end token): the ids that
DPO's log-ratios and any token weights (critical-token DPO) refer to.

Batches (docs/contracts.md): `chosen_input_ids`, `chosen_labels` (prompt -100), `chosen_attention_mask`,
`chosen_position_ids`, and the same under `rejected_`, each view right-padded to its own longest row.

Token weights (critical-token DPO): with `data.format_options.token_weights=true` a record also carries
`rejected_weights` (and optionally `chosen_weights`; field names `format_options.rejected_weights_field` /
`chosen_weights_field`): one number per target token of that view, i.e. per response token plus the end token,
under THIS tokenizer. A length that disagrees is an error naming the record (the weights were computed with another
tokenizer or another text); batches then carry `chosen_weights` / `rejected_weights` [B, T] (0 off-target, 1 for a
view without weights). `src/recipes/cdpo.py` writes such records from the very token ids this format produces.
Reference log-probs, likewise: with `format_options.ref_logps=true` both views carry `chosen_ref_logp` /
`rejected_ref_logp` (log π_ref per target token), batches carry them [B, T], and `method.reference=precomputed`
reads them instead of running a reference model (the cDPO recipe computes them once from its base policy).

Length policy: a view longer than `seq_len + 1` tokens loses its tail (as SFT rows do); a record whose prompt
alone leaves no response token is an error naming file and line (`data.drop_long_prompts=true` skips it). An empty
response is an error naming the record.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import datasets
import torch
from torch.utils.data import Dataset

from src.data.collate import pad_items
from src.data.errors import DataError
from src.data.formats.base import DataFormat, MapFn, record_keys, require_str, with_end
from src.data.formats.sft import chat_prompt_text, require_messages
from src.data.packing import IGNORE_INDEX
from src.data.sources import Locations, locate
from src.data.tokenizer import Tokenizer
from src.data.transforms import tokenizer_fingerprint

VIEWS = ("chosen", "rejected")


def _render_chat(tok: Tokenizer, prompt: list[dict[str, str]], response: list[dict[str, str]],
                 where: str) -> tuple[str, str]:
    """(prompt text with the generation prompt, the response's text as the template continues it)."""
    hf = tok.hf
    if not getattr(hf, "chat_template", None):
        raise DataError(f"{where}: chat preference records need a tokenizer with a chat template; use plain-text "
                        "records or a pretrained tokenizer (data.tokenizer.pretrained)")
    head = hf.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
    full = hf.apply_chat_template([*prompt, *response], tokenize=False)
    if not full.startswith(head):
        raise DataError(f"{where}: the chat template does not render the prompt as a prefix of the conversation; "
                        "use plain-text records")
    return head, full[len(head):]


class PreferenceTokenize:
    """Picklable batched `datasets.map` function: one record -> the token ids and target masks of both views."""

    def __init__(self, tok: Tokenizer, fields: dict[str, str], seq_len: int, drop_long: bool,
                 locations: Locations | None = None, per_token: tuple[str, ...] = ()) -> None:
        self.tok, self.fields, self.seq_len, self.drop = tok, fields, seq_len, drop_long
        self.locations = locations
        self.per_token = per_token  # record columns with one number per target token: "weights", "ref_logp"

    def _per_token(self, rec: Mapping[str, Any], key: str, view: str, n_prompt: int, n_response: int,
                   where: str) -> list[float]:
        """The view's per-token values of `key` aligned to its ids (0 on the prompt), untruncated; absent weights
        are 1."""
        field = self.fields[f"{view}_{key}"]
        w = rec.get(field)
        if w is None:
            return [0.0] * n_prompt + [1.0] * n_response
        if len(w) != n_response:
            raise DataError(f'{where}: "{field}" has {len(w)} values but the {view} response is {n_response} tokens '
                            "(its tokens and the end token) under this tokenizer; compute them with the same "
                            "tokenizer and text (data.tokenizer)")
        return [0.0] * n_prompt + [float(x) for x in w]

    def _encode(self, rec: Mapping[str, Any], view: str, where: str) -> tuple[list[int], list[int]] | None:
        prompt, response = rec[self.fields["prompt"]], rec[self.fields[view]]
        if isinstance(prompt, str):
            p_ids, r_ids = self.tok.encode(prompt), with_end(self.tok.encode(response), self.tok.eos_id)
        else:
            head, tail = _render_chat(self.tok, prompt, response, where)
            p_ids, r_ids = self.tok.encode(head), self.tok.encode(tail)
        ids = (p_ids + r_ids)[: self.seq_len + 1]
        target = ([0] * len(p_ids) + [1] * len(r_ids))[: self.seq_len + 1]
        if not any(target[1:]):
            return None
        extra = [self._per_token(rec, k, view, len(p_ids), len(r_ids), where)[: self.seq_len + 1]
                 for k in self.per_token]
        return ids, target, *extra

    def __call__(self, batch: dict[str, list[Any]], indices: list[int]) -> dict[str, list[list[Any]]]:
        keys = ("input_ids", "target_mask", *self.per_token)
        out: dict[str, list[list[Any]]] = {f"{v}_{k}": [] for v in VIEWS for k in keys}
        for j, index in enumerate(indices):
            rec = {k: batch[k][j] for k in batch}
            where = locate(self.locations, index)
            encoded = [self._encode(rec, v, where) for v in VIEWS]
            if any(e is None for e in encoded):
                if self.drop:
                    continue
                raise DataError(f"{where}: the prompt alone fills data.seq_len={self.seq_len} tokens, leaving no "
                                "response token to compare; increase data.seq_len, shorten the prompt, or set "
                                "data.drop_long_prompts=true to skip such records")
            for v, enc in zip(VIEWS, encoded):
                for k, col in zip(keys, enc):
                    out[f"{v}_{k}"].append(col)
        return out


class PreferenceDataset(Dataset):
    """Items with `chosen_input_ids` / `chosen_labels` (pre-shifted, -100 off-target) and the same for rejected."""

    def __init__(self, ds: datasets.Dataset) -> None:
        self.ds = ds.with_format(None)

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        row = self.ds[int(i)]
        item: dict[str, torch.Tensor] = {}
        for v in VIEWS:
            ids = torch.tensor(row[f"{v}_input_ids"], dtype=torch.long)  # [L+1]
            target = torch.tensor(row[f"{v}_target_mask"], dtype=torch.bool)  # [L+1]
            labels = ids[1:].clone()  # [L]
            labels[~target[1:]] = IGNORE_INDEX
            item[f"{v}_input_ids"], item[f"{v}_labels"] = ids[:-1], labels
            for key in ("weights", "ref_logp"):  # aligned to ids; label t's value is that of token t + 1
                if f"{v}_{key}" in row:
                    item[f"{v}_{key}"] = torch.tensor(row[f"{v}_{key}"], dtype=torch.float32)[1:]  # [L]
        return item


class PairCollator:
    """Right-pads each view of a list of pairs on its own (src/data/collate.py) and prefixes its keys."""

    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def __call__(self, items: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        batch: dict[str, torch.Tensor] = {}
        for v in VIEWS:
            keys = ("input_ids", "labels", *(k for k in ("weights", "ref_logp") if f"{v}_{k}" in items[0]))
            view = [{k: it[f"{v}_{k}"] for k in keys} for it in items]
            batch.update({f"{v}_{k}": t for k, t in pad_items(view, self.pad_id).items()})  # [B, T_view]
        return batch


class PreferenceFormat(DataFormat):
    """Prompt + chosen + rejected records (module docstring)."""

    name = "preference"

    @property
    def names(self) -> dict[str, str]:
        opts = self.settings.options
        return {"prompt": self.fields.prompt, "chosen": str(opts.get("chosen_field", "chosen")),
                "rejected": str(opts.get("rejected_field", "rejected")),
                "chosen_weights": str(opts.get("chosen_weights_field", "chosen_weights")),
                "rejected_weights": str(opts.get("rejected_weights_field", "rejected_weights")),
                "chosen_ref_logp": str(opts.get("chosen_ref_logp_field", "chosen_ref_logp")),
                "rejected_ref_logp": str(opts.get("rejected_ref_logp_field", "rejected_ref_logp"))}

    @property
    def token_weights(self) -> bool:
        return bool(self.settings.options.get("token_weights", False))

    @property
    def per_token(self) -> tuple[str, ...]:
        """The per-token record columns this run reads: token weights and/or reference log-probs."""
        on = {"weights": self.token_weights, "ref_logp": bool(self.settings.options.get("ref_logps", False))}
        return tuple(k for k, v in on.items() if v)

    @property
    def columns(self) -> list[str]:
        n = self.names
        extra = [n[f"{v}_{k}"] for k in self.per_token for v in VIEWS]
        return [n["prompt"], n["chosen"], n["rejected"], *extra]

    @property
    def record_kind(self) -> str:
        return "preference"

    def project(self, rec: Any, where: str) -> dict[str, Any]:
        keys = record_keys(rec, where)
        n = self.names
        cfg = {"prompt": "data.prompt_field", "chosen": "data.format_options.chosen_field",
               "rejected": "data.format_options.rejected_field"}
        for part in ("prompt", *VIEWS):
            if n[part] not in rec:
                raise DataError(f'{where}: preference record has no "{n[part]}" (found keys: {keys}); set '
                                f"{cfg[part]}=... or fix the record")
        if isinstance(rec[n["prompt"]], list):  # chat
            out = {n["prompt"]: require_messages(rec[n["prompt"]], n["prompt"], where, need_assistant=False)}
            for v in VIEWS:
                msgs = require_messages(rec[n[v]], n[v], where)
                if not any(m["content"].strip() for m in msgs):
                    raise DataError(f'{where}: the "{n[v]}" response is empty; remove the record or fix it')
                out[n[v]] = msgs
            return out
        out = {n["prompt"]: require_str(rec, n["prompt"], where, keys, cfg["prompt"])}
        for v in VIEWS:
            text = require_str(rec, n[v], where, keys, cfg[v])
            if not text.strip():
                raise DataError(f'{where}: the "{n[v]}" response is empty; remove the record or fix it')
            out[n[v]] = text
        for key in self.per_token:
            out.update(self._project_per_token(rec, key, where, keys))
        return out

    def _project_per_token(self, rec: Any, key: str, where: str, keys: str) -> dict[str, Any]:
        """A record's per-token lists of `key`, checked to be finite numbers. Weights: rejected required, chosen
        optional (1); reference log-probs: both required."""
        n, out = self.names, {}
        option = {"weights": "token_weights", "ref_logp": "ref_logps"}[key]
        for v in VIEWS:
            w = rec.get(n[f"{v}_{key}"])
            if w is None and (v == "rejected" or key == "ref_logp"):
                raise DataError(f'{where}: data.format_options.{option}=true but the record has no '
                                f'"{n[f"{v}_{key}"]}" (found keys: {keys}); add it or set {option}=false')
            if w is not None and (not isinstance(w, list) or not all(
                    isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in w)):
                raise DataError(f'{where}: "{n[f"{v}_{key}"]}" must be a list of finite numbers, one per response '
                                "token and the end token")
            out[n[f"{v}_{key}"]] = w
        return out

    def check_columns(self, columns: set[str], origin: str) -> None:
        if not set(self.columns) <= columns:
            raise DataError(f"{origin}: preference data needs the columns {self.columns} (found columns: "
                            f"{sorted(columns)}); set data.prompt_field / data.format_options.chosen_field / "
                            "rejected_field")

    def training_texts(self, ds: datasets.Dataset) -> list[str]:
        texts: list[str] = []
        n = self.names
        for rec in ds:
            for part in (n["prompt"], n["chosen"], n["rejected"]):
                val = rec[part]
                texts += [val] if isinstance(val, str) else [m["content"] for m in val]
        return texts

    def tokenize_fn(self, tok: Tokenizer, locations: Locations | None) -> MapFn:
        s = self.settings
        return PreferenceTokenize(tok, self.names, s.seq_len, s.drop_long_prompts, locations, self.per_token)

    def cache_key(self, split_fingerprint: str, tok: Tokenizer) -> list[Any]:
        s = self.settings
        return ["preference-v2", split_fingerprint, tokenizer_fingerprint(tok), self.names, s.seq_len,
                s.drop_long_prompts, self.per_token]

    def build_dataset(self, tokenized: datasets.Dataset, tok: Tokenizer, train: bool) -> Dataset:
        return PreferenceDataset(tokenized)

    def collate_fn(self, tok: Tokenizer) -> Callable[[Any], dict[str, Any]]:
        return PairCollator(tok.pad_id)

    def sample_prompt(self, rec: Mapping[str, Any], tok: Tokenizer) -> str:
        return chat_prompt_text(tok, rec[self.names["prompt"]], "a sample prompt")
