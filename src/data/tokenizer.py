"""Tokenizers: a byte-level BPE trained on the task corpus (cached) or any pretrained Hugging Face tokenizer.

Every special token the framework relies on is declared once, in `SpecialTokens`; the trained BPE gives them
the lowest ids in declaration order (pad=0, end-of-text=1, mask=2, reserved pads, extras), so ids are stable
across corpora. The `Tokenizer` wrapper is the only tokenizer type the rest of tokensmith sees; `.hf` exposes the
underlying transformers tokenizer for chat templates and `generate`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tokenizers
from tokenizers import decoders, models, pre_tokenizers, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from src.data.cache import Hasher, atomic_write_text
from src.data.errors import DataError

log = logging.getLogger(__name__)

SMOLLM2_NAME = "smollm2-135m"
N_BYTES = 256  # byte-level alphabet every trained BPE starts from


@dataclass(frozen=True)
class SpecialTokens:
    """The special tokens of a tokensmith tokenizer, in id order for a trained BPE.

    `n_reserved_pads` extra pad tokens `<|pad_0|>`, `<|pad_1|>`, ... are reserved for rainbow padding
    (masked-diffusion LMs cycle through several pad tokens); `extras` are user-defined specials.
    """

    pad: str = "<|pad|>"
    eos: str = "<|endoftext|>"
    mask: str | None = "<|mask|>"
    n_reserved_pads: int = 0
    extras: tuple[str, ...] = ()

    @property
    def reserved_pads(self) -> list[str]:
        return [f"<|pad_{i}|>" for i in range(self.n_reserved_pads)]

    @property
    def additional(self) -> list[str]:
        """Specials that are not pad/eos/mask (reserved pads, then extras)."""
        return [*self.reserved_pads, *self.extras]

    def all(self) -> list[str]:
        """All specials in id order; duplicates are a config error."""
        toks = [self.pad, self.eos, *([self.mask] if self.mask else []), *self.additional]
        dupes = {t for t in toks if toks.count(t) > 1}
        if dupes:
            raise DataError(f"special tokens must be distinct; duplicated: {sorted(dupes)}")
        return toks


class Tokenizer:
    """Thin wrapper over a transformers fast tokenizer with the ids tokensmith needs.

    `pad_id` falls back to `eos_id` for pretrained tokenizers without a pad token (GPT-2): padded positions are
    always masked out by `attention_mask`/`labels == -100`, so the pad id's value never reaches a loss.
    """

    def __init__(self, hf: PreTrainedTokenizerFast, reserved_pads: Sequence[str] = ()) -> None:
        self.hf = hf
        if hf.eos_token_id is None:
            raise DataError(
                "the tokenizer has no end-of-text (eos) token; packing needs one. Pass a tokenizer with an eos "
                "token or train a BPE (data.tokenizer={vocab_size: ...})"
            )
        self._reserved_pads = list(reserved_pads)

    # -- encoding ---------------------------------------------------------------------------------------------
    def encode(self, text: str, add_special: bool = False) -> list[int]:
        """Token ids of `text`; `add_special` adds the tokenizer's own BOS/EOS template (if it has one)."""
        return self.hf.encode(text, add_special_tokens=add_special)

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return self.hf(list(texts), add_special_tokens=False)["input_ids"]

    def decode(self, ids: Sequence[int], skip_special: bool = False) -> str:
        return self.hf.decode(list(ids), skip_special_tokens=skip_special)

    # -- ids --------------------------------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        """Number of token ids (base vocab + added tokens): the model's embedding needs at least this many rows."""
        return len(self.hf)

    @property
    def eos_id(self) -> int:
        return int(self.hf.eos_token_id)

    @property
    def pad_id(self) -> int:
        pid = self.hf.pad_token_id
        return self.eos_id if pid is None else int(pid)

    @property
    def mask_id(self) -> int | None:
        mid = self.hf.mask_token_id
        return None if mid is None else int(mid)

    @property
    def reserved_pad_ids(self) -> list[int]:
        return [int(self.hf.convert_tokens_to_ids(t)) for t in self._reserved_pads]

    @property
    def special_ids(self) -> frozenset[int]:
        return frozenset(int(i) for i in self.hf.all_special_ids) | frozenset(self.reserved_pad_ids)

    def check_vocab(self, model_vocab_size: int) -> None:
        """Raise if any token id this tokenizer can emit does not fit the model's embedding."""
        max_id = max(self.vocab_size - 1, *self.special_ids)
        if max_id >= model_vocab_size:
            raise DataError(
                f"tokenizer emits ids up to {max_id} (vocab size {self.vocab_size}) but the model's vocab size is "
                f"{model_vocab_size}; set model vocab_size >= {max_id + 1} (or resize the model's embeddings "
                "after adding special tokens)"
            )

    def __repr__(self) -> str:
        return (
            f"Tokenizer(vocab_size={self.vocab_size}, pad_id={self.pad_id}, eos_id={self.eos_id}, "
            f"mask_id={self.mask_id}, reserved_pads={len(self._reserved_pads)})"
        )


# --- trained byte-level BPE -------------------------------------------------------------------------------------
def _bpe_cache_key(texts: Iterable[str], vocab_size: int, specials: SpecialTokens) -> tuple[str, list[str]]:
    h = Hasher().update_json(
        {
            "kind": "bytelevel-bpe-v1",
            "tokenizers": tokenizers.__version__,
            "vocab_size": vocab_size,
            "specials": specials.all(),
        }
    )
    kept: list[str] = []
    for t in texts:
        h.update(t)
        kept.append(t)
    return h.hexdigest(), kept


def _train_bpe_uncached(texts: Sequence[str], vocab_size: int, specials: SpecialTokens) -> tokenizers.Tokenizer:
    """Train the BPE model itself (split out so tests can count real trainings)."""
    tok = tokenizers.Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials.all(),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


def _wrap_trained(tok: tokenizers.Tokenizer, specials: SpecialTokens) -> Tokenizer:
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token=specials.pad,
        eos_token=specials.eos,
        mask_token=specials.mask,
        additional_special_tokens=specials.additional,
    )
    return Tokenizer(hf, reserved_pads=specials.reserved_pads)


def train_bpe(
    texts: Iterable[str],
    vocab_size: int,
    specials: SpecialTokens | None = None,
    cache_dir: str | Path = ".cache",
) -> Tokenizer:
    """Train (or load from cache) a byte-level BPE with `vocab_size` ids, specials first.

    The cache key hashes the corpus content, vocab_size, specials and the `tokenizers` version, so a changed
    corpus retrains and an unchanged one loads `<cache_dir>/tokenizers/bpe-<key>/tokenizer.json` in milliseconds.
    The file is written atomically: two processes racing both train and the identical result wins.
    """
    specials = specials or SpecialTokens()
    n_special = len(specials.all())
    if vocab_size < N_BYTES + n_special:
        raise DataError(
            f"data.tokenizer.vocab_size={vocab_size} is too small for a byte-level BPE: it needs at least "
            f"{N_BYTES} byte tokens + {n_special} special tokens = {N_BYTES + n_special}"
        )
    key, kept = _bpe_cache_key(texts, vocab_size, specials)
    if not kept:
        raise DataError("cannot train a BPE tokenizer on an empty corpus; check data.source")
    path = Path(cache_dir) / "tokenizers" / f"bpe-{key}" / "tokenizer.json"
    if path.exists():
        log.info("loading cached BPE tokenizer %s", path)
        tok = tokenizers.Tokenizer.from_file(str(path))
    else:
        log.info("training byte-level BPE (vocab_size=%d) on %d texts", vocab_size, len(kept))
        tok = _train_bpe_uncached(kept, vocab_size, specials)
        atomic_write_text(path, tok.to_str())
    return _wrap_trained(tok, specials)


# --- pretrained ---------------------------------------------------------------------------------------------------
def load_pretrained(
    name_or_path: str,
    gguf_file: str | None = None,
    cache_dir: str | Path | None = None,
    add_specials: SpecialTokens | None = None,
) -> Tokenizer:
    """Load any Hugging Face tokenizer (hub name or local dir; `gguf_file` for a GGUF checkpoint).

    `smollm2-135m` means the SmolLM2-135M-Instruct GGUF that `src.assets.pretrained` fetches into the cache.
    `add_specials` adds the mask token / reserved pads / extras a method needs on top of the pretrained vocab
    (the model's embeddings must then be resized; `check_vocab` says so if they are not).
    """
    if name_or_path == SMOLLM2_NAME:
        from src.assets.pretrained import ensure_smollm2_gguf  # lazy: only this path needs the download

        gguf_path = Path(ensure_smollm2_gguf(Path(cache_dir) / "pretrained" if cache_dir is not None else None))
        hf = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    else:
        kwargs: dict[str, Any] = {"gguf_file": gguf_file} if gguf_file else {}
        hf = AutoTokenizer.from_pretrained(name_or_path, **kwargs)
    if not getattr(hf, "is_fast", False):
        raise DataError(f"tokenizer {name_or_path!r} has no fast (Rust) implementation; tokensmith needs one")
    reserved: list[str] = []
    if add_specials is not None:
        extra: dict[str, Any] = {}
        if add_specials.mask and hf.mask_token is None:
            extra["mask_token"] = add_specials.mask
        if add_specials.additional:
            extra["additional_special_tokens"] = add_specials.additional
        if extra:
            # keep the tokenizer's own extra specials (e.g. chat markers) instead of replacing the list
            hf.add_special_tokens(extra, replace_extra_special_tokens=False)
        reserved = add_specials.reserved_pads
    return Tokenizer(hf, reserved_pads=reserved)


# --- factory -----------------------------------------------------------------------------------------------------
TextsArg = Iterable[str] | Callable[[], Iterable[str]] | None


def build_tokenizer(cfg: Mapping[str, Any], texts_for_training: TextsArg, cache_dir: str | Path) -> Tokenizer:
    """Build the tokenizer described by the `data.tokenizer` config node.

    `{vocab_size: 512, n_reserved_pads: 0}` trains a byte-level BPE on `texts_for_training` (an iterable or a
    zero-argument callable returning one, so pretrained tokenizers never load the corpus);
    `{pretrained: gpt2 | <dir> | smollm2-135m, gguf_file: null}` loads one.
    Optional keys: `mask` (bool, default true for a trained BPE, false for pretrained), `n_reserved_pads`,
    `extra_special_tokens` (list of strings).
    """
    cfg = dict(cfg or {})
    known = {"vocab_size", "n_reserved_pads", "pretrained", "gguf_file", "mask", "extra_special_tokens"}
    unknown = set(cfg) - known
    if unknown:
        raise DataError(f"unknown data.tokenizer keys {sorted(unknown)}; known keys: {sorted(known)}")
    pretrained = cfg.get("pretrained")
    n_pads = int(cfg.get("n_reserved_pads") or 0)
    extras = tuple(cfg.get("extra_special_tokens") or ())
    if pretrained:
        want_mask = bool(cfg.get("mask", False))
        add = SpecialTokens(mask=SpecialTokens.mask if want_mask else None, n_reserved_pads=n_pads, extras=extras)
        return load_pretrained(str(pretrained), cfg.get("gguf_file"), cache_dir, add_specials=add)
    if cfg.get("vocab_size") is None:
        raise DataError("data.tokenizer needs either vocab_size (train a BPE) or pretrained (load one)")
    specials = SpecialTokens(
        mask=SpecialTokens.mask if cfg.get("mask", True) else None, n_reserved_pads=n_pads, extras=extras
    )
    texts = texts_for_training() if callable(texts_for_training) else texts_for_training
    if texts is None:
        raise DataError("training a BPE tokenizer needs texts; none were given")
    return train_bpe(texts, int(cfg["vocab_size"]), specials, cache_dir)
