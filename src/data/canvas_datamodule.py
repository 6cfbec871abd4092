"""`CanvasDataModule`: prompt/response data on a fixed response canvas for masked-diffusion LMs (docs/mdlm.md).

An `LMDataModule` with `data.format=canvas` (src/data/formats/canvas.py) whose options are plain data keys:
`data.canvas` (response canvas = generation length, tokens), `data.padding` (`eos` | `rainbow`) and `data.n_pads`
(K rainbow pad tokens, 7 by default); `data.train_canvases` (a list of sizes >= canvas) trains on one of them per
batch, e.g. every generation length used at inference. It also makes sure the tokenizer has what the method
needs: a [MASK] token and K reserved pad tokens `<|pad_0|>`... (a trained BPE gets them as specials; a
pretrained tokenizer gains them when absent, and the model's embedding must then be resized). The pads are
reserved whatever `data.padding` says, so an `eos` and a `rainbow` run share one tokenizer and one model size.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from src.data.lm_datamodule import LMDataModule
from src.data.rainbow import DEFAULT_N_PADS
from src.data.sources import to_plain


def canvas_tokenizer_cfg(tokenizer: Mapping[str, Any] | None, n_pads: int) -> dict[str, Any]:
    """The tokenizer config with a [MASK] token and at least `n_pads` reserved pads."""
    cfg: dict[str, Any] = to_plain(tokenizer) if tokenizer else {"vocab_size": 512}
    cfg["mask"] = True
    cfg["n_reserved_pads"] = max(int(cfg.get("n_reserved_pads") or 0), int(n_pads))
    return cfg


class CanvasDataModule(LMDataModule):
    """Masked-diffusion SFT data: batches of `prompt + canvas` rows (src/data/rainbow.py)."""

    def __init__(self, source: Any, canvas: int, padding: str = "rainbow", n_pads: int = DEFAULT_N_PADS,
                 tokenizer: Mapping[str, Any] | None = None, train_canvases: list[int] | None = None,
                 **kwargs: Any) -> None:
        kwargs.pop("format", None)
        kwargs.pop("format_options", None)
        self.canvas, self.padding, self.n_pads = int(canvas), str(padding), int(n_pads)
        super().__init__(source=source, format="canvas", tokenizer=canvas_tokenizer_cfg(tokenizer, n_pads),
                         format_options={"canvas": self.canvas, "padding": self.padding, "n_pads": self.n_pads,
                                         "train_canvases": list(train_canvases or [])},
                         **kwargs)
