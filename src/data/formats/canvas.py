"""`canvas`: prompt/response records on a fixed response canvas, for masked-diffusion LMs (src/data/rainbow.py).

Records are `{prompt, response}` (data.prompt_field / data.response_field), as for `sft`. Prompt and response are
tokenized separately (the prompt exactly as at inference); the response is laid out on a canvas of
`format_options.canvas` tokens at collation, padded as `format_options.padding` says (`eos` or `rainbow` with
`format_options.n_pads` cycling pad tokens; `format_options.train_canvases`, a list of sizes >= canvas, picks one
of them per batch instead). A response that does not fit the canvas with its end token is one
DataError naming the record, the canvas size and the fix, at tokenization (before any training step).

Batches: input_ids, labels (clean canvas tokens, NOT shifted; -100 on the prompt), attention_mask, position_ids
`[B, T]`, T = longest prompt + canvas. Use `CanvasDataModule` (src/data/canvas_datamodule.py), which also gives
the tokenizer its [MASK] and pad tokens.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import datasets
import torch
from torch.utils.data import Dataset

from src.data.errors import DataError
from src.data.formats.base import MapFn, with_end
from src.data.formats.sft import SFTFormat
from src.data.rainbow import DEFAULT_N_PADS, PADDINGS, CanvasCollator
from src.data.sources import Locations, locate
from src.data.tokenizer import Tokenizer
from src.data.transforms import tokenizer_fingerprint


def canvas_options(options: Mapping[str, Any]) -> tuple[int, str, int]:
    """(canvas, padding, n_pads) from data.format_options, with one DataError for a missing or bad value."""
    unknown = set(options) - {"canvas", "padding", "n_pads", "train_canvases"}
    if unknown:
        raise DataError(f"unknown data.format_options {sorted(unknown)} for data.format=canvas; known: canvas, "
                        "padding, n_pads, train_canvases")
    if "canvas" not in options:
        raise DataError("data.format=canvas needs data.format_options.canvas (the response canvas = generation "
                        "length, in tokens)")
    canvas, padding = int(options["canvas"]), str(options.get("padding", "rainbow"))
    n_pads = int(options.get("n_pads", DEFAULT_N_PADS))
    if canvas < 2:
        raise DataError(f"data.canvas must be >= 2 (an answer token and the end token), got {canvas}")
    if padding not in PADDINGS:
        raise DataError(f"data.padding={padding!r} is not one of {PADDINGS}")
    if padding == "rainbow" and n_pads < 1:
        raise DataError(f"data.n_pads={n_pads}: rainbow padding needs at least one pad token (7 by default)")
    return canvas, padding, n_pads


class CanvasTokenize:
    """Picklable batched `datasets.map` function: prompt_ids, answer_ids; a response too long for the canvas is
    an error naming its record."""

    def __init__(self, tok: Tokenizer, prompt: str, response: str, canvas: int,
                 locations: Locations | None = None) -> None:
        self.tok, self.prompt, self.response, self.canvas, self.locations = tok, prompt, response, canvas, locations

    def __call__(self, batch: dict[str, list[Any]], indices: list[int]) -> dict[str, list[list[int]]]:
        out: dict[str, list[list[int]]] = {"prompt_ids": [], "answer_ids": []}
        for j, i in enumerate(indices):
            p, r = batch[self.prompt][j], batch[self.response][j]
            where = locate(self.locations, i)
            if not isinstance(p, str) or not isinstance(r, str):
                raise DataError(f'{where}: data.format=canvas needs string "{self.prompt}" and "{self.response}" '
                                "fields (chat records are not supported); fix the record")
            ans = with_end(self.tok.encode(r), self.tok.eos_id)[:-1]  # a response ending in the end token's text:
            # the canvas lays out exactly one end token (src/data/rainbow.py), so that one is not part of the answer
            if len(ans) + 1 > self.canvas:
                raise DataError(
                    f"{where}: the response has {len(ans)} tokens, which with its end token needs a canvas of "
                    f"{len(ans) + 1}, but data.canvas={self.canvas}; raise data.canvas to at least {len(ans) + 1} "
                    "or shorten the response"
                )
            out["prompt_ids"].append(self.tok.encode(p))
            out["answer_ids"].append(ans)
        return out


class CanvasDataset(torch.utils.data.Dataset):
    """Items `{prompt_ids [P], answer_ids [A]}` (variable lengths; the collator lays out the canvas)."""

    def __init__(self, ds: Any) -> None:
        self.ds = ds.with_format(None)

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        row = self.ds[int(i)]
        return {"prompt_ids": torch.tensor(row["prompt_ids"], dtype=torch.long),
                "answer_ids": torch.tensor(row["answer_ids"], dtype=torch.long)}


class CanvasFormat(SFTFormat):
    """Prompt/response records on a fixed, padded response canvas (module docstring)."""

    name = "canvas"

    def __init__(self, settings: Any) -> None:
        super().__init__(settings)
        self.canvas, self.padding, self.n_pads = canvas_options(settings.options)
        self.train_canvases = [int(c) for c in settings.options.get("train_canvases") or []]

    @property
    def record_kind(self) -> str:
        return "canvas (prompt/response)"

    def tokenize_fn(self, tok: Tokenizer, locations: Locations | None) -> MapFn:
        return CanvasTokenize(tok, self.fields.prompt, self.fields.response, self.canvas, locations)

    def cache_key(self, split_fingerprint: str, tok: Tokenizer) -> list[Any]:
        # padding and n_pads act at collation only; the canvas decides which records are accepted
        return ["canvas-v2", split_fingerprint, tokenizer_fingerprint(tok), self.fields.__dict__, self.canvas]

    def build_dataset(self, tokenized: datasets.Dataset, tok: Tokenizer, train: bool) -> Dataset:
        return CanvasDataset(tokenized)

    def collate_fn(self, tok: Tokenizer) -> Callable[[Any], dict[str, Any]]:
        pads = tok.reserved_pad_ids[: self.n_pads] if self.padding == "rainbow" else []
        if self.padding == "rainbow" and len(pads) < self.n_pads:
            raise DataError(f"data.padding=rainbow with data.n_pads={self.n_pads} needs as many reserved pad tokens, "
                            f"but the tokenizer has {len(tok.reserved_pad_ids)}; set data.tokenizer.n_reserved_pads"
                            f">={self.n_pads} (CanvasDataModule does this)")
        return CanvasCollator(self.canvas, tok.eos_id, pads, self.padding, tok.pad_id, tok.mask_id,
                              canvases=self.train_canvases or None)
