"""Fixed response canvases for masked-diffusion LMs: EOS padding (the baseline) and Rainbow padding.

A masked-diffusion LM generates a whole response canvas of `canvas` positions at once, so during SFT every
answer is laid out on a canvas of exactly that size (the generation length used at inference), answer first:

- `eos`:     answer, then the end token repeated to the end of the canvas. The end token is both terminator and
             filler: late positions are almost always <eos>, which a sampler commits first with confidence ~1,
             and the end signal spreads backwards ("<eos> overflow": longer canvases give SHORTER answers).
- `rainbow`: answer, exactly ONE end token (always, also for the longest answer of a batch), then K dedicated pad
             tokens cycling pad_0, pad_1, ..., pad_{K-1}, pad_0, ... (Kim et al. 2025, K = 7 by default). Each pad
             position's probability is split over K tokens, so no filler wins the early steps.

Pads are maskable and in the loss like any answer token. The answer is read back by the sampler's decoding rule
(src/models/components/mdlm_sampler.py, `answer_tokens`): the tokens before the first end token, pads dropped.
An answer that does not fit (answer + end token > canvas) is one `DataError` naming the canvas size and the fix;
nothing is truncated silently.

Batches (`CanvasCollator`): each row is `prompt + canvas`, right-padded to the longest row with the tokenizer's
pad id (attention 0). `labels[b, t]` is the clean token AT position t on the canvas (not shifted: the objective is
bidirectional and predicts each masked position itself) and -100 on the prompt and batch padding; so
`labels != -100` marks the maskable answer positions. input_ids hold the clean canvas; masking is the objective's
job (src/losses/mdlm.py), so its RNG is checkpointed with the model.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence

import torch

from src.data.collate import pad_items
from src.data.errors import DataError
from src.data.packing import IGNORE_INDEX

PADDINGS = ("eos", "rainbow")
DEFAULT_N_PADS = 7


def check_padding(padding: str, end_id: int, pad_ids: Sequence[int], mask_id: int | None = None) -> None:
    """One DataError for a padding name or pad ids that cannot work (unknown name, no pads, pads that collide)."""
    if padding not in PADDINGS:
        raise DataError(f"data.padding={padding!r} is not one of {PADDINGS} (eos: the end token fills the canvas; "
                        "rainbow: one end token, then cycling pad tokens)")
    if padding != "rainbow":
        return
    if not pad_ids:
        raise DataError("data.padding=rainbow needs at least one pad token; set data.n_pads >= 1 (7 by default)")
    clash = {end_id, *([] if mask_id is None else [mask_id])} & set(pad_ids)
    if clash or len(set(pad_ids)) != len(pad_ids):
        raise DataError(f"rainbow pad ids {list(pad_ids)} must be distinct and differ from the end token ({end_id}) "
                        f"and [MASK] ({mask_id}); the tokenizer's reserved pads (data.tokenizer.n_reserved_pads) "
                        "are the intended ones")


def fill_canvas(answer: Sequence[int], canvas: int, end_id: int, pad_ids: Sequence[int], padding: str) -> list[int]:
    """The answer laid out on a canvas of `canvas` tokens (module docstring): exactly `canvas` ids.

    Worked example, canvas 8, answer [5, 6, 7], end 1, pads [20, 21]:
      eos     -> [5, 6, 7, 1, 1, 1, 1, 1]
      rainbow -> [5, 6, 7, 1, 20, 21, 20, 21]
    """
    need = len(answer) + 1
    if need > canvas:
        raise DataError(
            f"an answer of {len(answer)} tokens plus its end token needs a canvas of {need}, but data.canvas="
            f"{canvas}; raise data.canvas to at least {need} (the generation length at inference) or shorten "
            "the answers"
        )
    rest = canvas - need
    if padding == "eos":
        return [*answer, end_id, *([end_id] * rest)]
    if padding == "rainbow":
        return [*answer, end_id, *(pad_ids[i % len(pad_ids)] for i in range(rest))]
    check_padding(padding, end_id, pad_ids)  # raises the one message for an unknown name
    raise AssertionError("unreachable")


def batch_canvas(items: Sequence[Mapping[str, torch.Tensor]], canvases: Sequence[int]) -> int:
    """One canvas size for a batch, picked from `canvases` by a hash of the batch's token ids: varied across
    batches, yet the same batch always gets the same canvas (no RNG state, so resume and DataLoader workers cannot
    change it)."""
    if len(canvases) == 1:
        return int(canvases[0])
    h = 0
    for it in items:
        h = zlib.crc32(it["prompt_ids"].numpy().tobytes(), h)
        h = zlib.crc32(it["answer_ids"].numpy().tobytes(), h)
    return int(canvases[h % len(canvases)])


class CanvasCollator:
    """Items `{prompt_ids [P], answer_ids [A]}` -> a batch of `prompt + canvas` rows (module docstring).

    `canvases` (optional): several canvas sizes, one picked per batch by `batch_canvas` (training on every
    generation length that will be used at inference); each must be >= `canvas`, the size answers are checked
    against. Picklable (DataLoader workers receive it). Keys: input_ids, labels, attention_mask, position_ids
    `[B, T]` long, T = longest prompt + the batch's canvas.
    """

    def __init__(self, canvas: int, end_id: int, pad_ids: Sequence[int], padding: str, batch_pad_id: int,
                 mask_id: int | None = None, canvases: Sequence[int] | None = None) -> None:
        if canvas < 2:
            raise DataError(f"data.canvas must be >= 2 (an answer token and the end token), got {canvas}")
        check_padding(padding, end_id, pad_ids, mask_id)
        self.canvas, self.end_id, self.pad_ids = int(canvas), int(end_id), [int(p) for p in pad_ids]
        self.padding, self.batch_pad_id = padding, int(batch_pad_id)
        self.canvases = [int(c) for c in canvases] if canvases else [self.canvas]
        if min(self.canvases) < self.canvas:
            raise DataError(f"data.train_canvases={self.canvases} holds a canvas smaller than data.canvas="
                            f"{self.canvas}; every training canvas must be >= data.canvas")

    def row(self, prompt: Sequence[int], answer: Sequence[int], canvas: int | None = None
            ) -> tuple[list[int], list[int]]:
        """(input_ids, labels) of one example."""
        filled = fill_canvas(answer, canvas or self.canvas, self.end_id, self.pad_ids, self.padding)
        return [*prompt, *filled], [IGNORE_INDEX] * len(prompt) + filled

    def __call__(self, items: Sequence[Mapping[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        canvas = batch_canvas(items, self.canvases)
        rows = []
        for it in items:
            ids, labels = self.row(it["prompt_ids"].tolist(), it["answer_ids"].tolist(), canvas)
            rows.append({"input_ids": torch.tensor(ids, dtype=torch.long),
                         "labels": torch.tensor(labels, dtype=torch.long)})
        return pad_items(rows, self.batch_pad_id)
