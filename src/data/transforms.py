"""Train-time transform settings and the tokenizer's identity: a leaf of `src/data` (it imports only the error
and hashing helpers), so that the format base class, the StochasTok module and the tokenization cache can all use
it without importing one another (which once closed an import circle: formats/base -> stochastok -> tokenized ->
sources -> formats/registry -> formats/base).

A train-time transform changes the training rows on the fly (validation rows never). A data format declares the
ones it applies in `DataFormat.train_transforms`; the data module refuses a configured transform the format does
not declare, with one error naming the fix. StochasTok (`data.stochastok.p`, src/data/stochastok.py) is the one
there is.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from src.data.cache import Hasher
from src.data.errors import DataError

STOCHASTOK = "stochastok"  # the name a format lists in `train_transforms`


def check_p(p: float) -> float:
    """A StochasTok split probability: finite and >= 0 (0 = off)."""
    p = float(p)
    if not (p >= 0.0 and math.isfinite(p)):
        raise DataError(f"data.stochastok.p must be >= 0 (0 = off; the paper uses 0.1, 1.0 for addition), got {p}")
    return p


@dataclass(frozen=True)
class StochasTokConfig:
    """`data.stochastok`: `{p: 0.1}`; p = 0 (or a null node) turns it off."""

    p: float = 0.0

    @classmethod
    def from_cfg(cls, cfg: Mapping[str, Any] | float | None) -> StochasTokConfig:
        if cfg is None:
            return cls()
        if isinstance(cfg, (int, float)):
            return cls(check_p(cfg))
        unknown = set(cfg) - {"p"}
        if unknown:
            raise DataError(f"unknown data.stochastok keys {sorted(unknown)}; known keys: ['p']")
        return cls(check_p(cfg.get("p", 0.0) or 0.0))

    @property
    def enabled(self) -> bool:
        return self.p > 0


def tokenizer_fingerprint(tok: Any) -> str:
    """The identity of a tokenizer (src/data/tokenizer.py): its full serialization, chat template and special ids.
    Part of every tokenization cache key and of StochasTok's split-table key."""
    hf = tok.hf
    return (
        Hasher()
        .update(hf.backend_tokenizer.to_str())
        .update(str(getattr(hf, "chat_template", None)))
        .update_json(sorted(tok.special_ids))
        .hexdigest()
    )
