"""The run's tokenizer, rebuilt from its saved data config, as Hugging Face tokenizer files.

The data module is instantiated from the resolved config and asked for `.tokenizer`, exactly as training did: a
trained byte-level BPE is found in the cache by the content of its training texts (or retrained identically), a
pretrained tokenizer is loaded with the special tokens the run added. Its transformers tokenizer (`.hf`) is then
saved with `save_pretrained`: `tokenizer.json`, `tokenizer_config.json` (pad / eos / bos / mask and extra special
tokens) and the chat template, if it has one. StochasTok runs export this base tokenizer: StochasTok's splitting is
a training-time transform of the token sequence, not a different vocabulary (docs/stochastok.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from src.export.errors import ExportError


def rebuild_tokenizer(cfg: Any) -> Any:
    """The run's `Tokenizer` (src/data/tokenizer.py), through the data module of `cfg.data`."""
    from hydra.utils import instantiate

    if "data" not in cfg or "_target_" not in (cfg.data or {}):
        raise ExportError("the run's config has no `data._target_`, so its tokenizer cannot be rebuilt")
    try:
        datamodule = instantiate(cfg.data, _convert_="all")
        return datamodule.tokenizer
    except Exception as err:
        cache = (cfg.data or {}).get("cache_dir")
        raise ExportError(
            f"could not rebuild the run's tokenizer from its data config ({type(err).__name__}: {err}). A trained "
            f"BPE is found by the content of the training data (cache: {cache}/tokenizers/): the data source of the "
            "run must be readable again (the same data.source path and files), and TOKENSMITH_CACHE should point at "
            "the run's cache"
        ) from err


def special_token_ids(tokenizer: Any) -> dict[str, int | None]:
    """bos/eos/pad ids for the model config and generation config (pad falls back to eos, as in tokensmith)."""
    hf = tokenizer.hf
    return {"bos_token_id": hf.bos_token_id, "eos_token_id": tokenizer.eos_id, "pad_token_id": tokenizer.pad_id}


def save_tokenizer(tokenizer: Any, out: Path, model_max_length: int | None = None) -> None:
    hf = tokenizer.hf
    if hf.pad_token is None:  # tokensmith pads with eos when a pretrained tokenizer has no pad token
        hf.pad_token = hf.eos_token
    if model_max_length:
        hf.model_max_length = int(model_max_length)
    hf.save_pretrained(str(out))
