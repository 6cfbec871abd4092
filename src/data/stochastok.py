"""StochasTok: stochastic token splitting (Sims et al., 2025; docs/stochastok.md).

During pretraining some tokens are replaced by two smaller vocabulary tokens whose bytes concatenate to the
original token's bytes. The text is unchanged, only its segmentation varies, so the model gets to "see inside"
its tokens while vocabulary, model, loss and decoding stay as they are.

- `SplitTable.build(tokenizer)`: every allowed split `v -> (a, b)` with `bytes(a) + bytes(b) == bytes(v)` and
  `a`, `b` in the vocabulary (ALL cuts, not only the BPE merge that made `v`); specials are never split nor
  produced. Byte-level BPE is handled on its byte-to-unicode strings, where one character is one byte.
  `SplitTable.load_or_build` caches it as `.npz` integer arrays (CSR), so ids stay ints after a reload (the
  reference code's JSON cache turns its int keys into strings and silently disables expansion).
- `expand(ids, table, p, rng)`: `floor(p * n)` attempts, each drawing a position uniformly from the CURRENT
  sequence and, if that token has splits, replacing it by one drawn uniformly; pieces may be split again.
  The reference rebuilds the list on every attempt (O(p * n^2)); here the sequence is a linked list and the
  draw is over an unordered pool of its nodes (uniform over positions needs no order), so one attempt is O(1)
  and a sequence O(n + p * n).
- `StochasTokPackedDataset`: on-the-fly expansion of packed pretraining rows in DataLoader workers, seeded by
  (seed, epoch, index): a fresh segmentation every epoch, identical for any number of workers/ranks and on
  resume. `expand_dataset`: the same, offline, over a tokenized `datasets.Dataset`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from src.data.cache import Hasher, atomic_write_bytes
from src.data.errors import DataError
from src.data.packing import Batch, PackedRows, pack_flat, row_to_item, rows_to_batch
from src.data.sampler import InfiniteSampler, epoch_permutation
from src.data.tokenizer import Tokenizer
from src.data.transforms import StochasTokConfig as StochasTokConfig  # re-exported for its users
from src.data.transforms import check_p, tokenizer_fingerprint

log = logging.getLogger(__name__)

TABLE_VERSION = 1
DEFAULT_P = 0.1  # the paper's rate for pretraining text


# --- split table ---------------------------------------------------------------------------------------------------
def _token_strings(tok: Tokenizer) -> tuple[dict[str, int], set[int]]:
    """(string -> id over the splittable vocabulary, ids never to split or produce).

    Byte-level BPE vocab strings are the GPT-2 byte-to-unicode images of the token bytes (one char per byte), so
    cutting them at character positions is cutting bytes. SentencePiece-style BPE/Unigram strings concatenate
    to the text too ("▁he" + "llo"). WordPiece ("##") strings do not, so it is refused.
    """
    model = type(tok.hf.backend_tokenizer.model).__name__
    if model not in ("BPE", "Unigram"):
        raise DataError(
            f"StochasTok needs a BPE or Unigram tokenizer whose token strings concatenate to the text; got a "
            f"{model} model. Use a BPE tokenizer (data.tokenizer.vocab_size=... trains one) or set data.stochastok.p=0"
        )
    vocab = tok.hf.get_vocab()
    added = {int(i) for i in tok.hf.get_added_vocab().values()}
    forbidden = added | set(tok.special_ids)
    return {s: int(i) for s, i in vocab.items() if int(i) not in forbidden}, forbidden


@dataclass
class SplitTable:
    """All allowed splits of every token, as CSR integer arrays.

    `pairs[offsets[v]:offsets[v + 1]]` are the `(left, right)` id pairs of token `v`; a token without splits
    (single byte, special, or no cut whose both halves are tokens) has an empty range.
    """

    offsets: np.ndarray  # [V + 1] int64
    pairs: np.ndarray  # [M, 2] int64

    @property
    def vocab_size(self) -> int:
        return int(self.offsets.shape[0] - 1)

    @property
    def n_splits(self) -> int:
        return int(self.pairs.shape[0])

    def splits(self, token: int) -> list[tuple[int, int]]:
        """The allowed `(left, right)` splits of `token` (empty for ids outside the table)."""
        if not 0 <= token < self.vocab_size:
            return []
        a, b = int(self.offsets[token]), int(self.offsets[token + 1])
        return [(int(x), int(y)) for x, y in self.pairs[a:b]]

    # hot-path views: python lists index ~10x faster than numpy scalars in the per-attempt loop
    def _lists(self) -> tuple[list[int], list[int], list[int], list[int]]:
        cached = getattr(self, "_py", None)
        if cached is None:
            offs = self.offsets.tolist()
            counts = [offs[i + 1] - offs[i] for i in range(len(offs) - 1)]
            cached = (offs, counts, self.pairs[:, 0].tolist(), self.pairs[:, 1].tolist())
            object.__setattr__(self, "_py", cached)
        return cached

    def __getstate__(self) -> dict[str, Any]:  # workers rebuild the list views lazily
        return {"offsets": self.offsets, "pairs": self.pairs}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.offsets, self.pairs = state["offsets"], state["pairs"]

    # -- construction --------------------------------------------------------------------------------------------
    @classmethod
    def build(cls, tok: Tokenizer) -> SplitTable:
        """Every cut `j` of every multi-char, non-special token string whose halves are both tokens.

        Dict lookups only: O(total length of the vocabulary's strings) cuts (the reference's list membership
        test made this quadratic in the vocabulary size).
        """
        strings, _ = _token_strings(tok)
        vocab_size = max(tok.vocab_size, max(strings.values(), default=-1) + 1)
        per_token: list[list[tuple[int, int]]] = [[] for _ in range(vocab_size)]
        for s, v in strings.items():
            for j in range(1, len(s)):
                a, b = strings.get(s[:j]), strings.get(s[j:])
                if a is not None and b is not None:
                    per_token[v].append((a, b))
        counts = np.fromiter((len(x) for x in per_token), dtype=np.int64, count=vocab_size)
        offsets = np.zeros(vocab_size + 1, dtype=np.int64)
        np.cumsum(counts, out=offsets[1:])
        pairs = np.array([pq for x in per_token for pq in x], dtype=np.int64).reshape(-1, 2)
        return cls(offsets, pairs)

    def save(self, path: str | Path) -> Path:
        """Atomic `.npz` of integer arrays: the ids come back as ints, never as JSON's string keys."""
        import io

        buf = io.BytesIO()
        np.savez(buf, version=np.int64(TABLE_VERSION), offsets=self.offsets, pairs=self.pairs)
        return atomic_write_bytes(path, buf.getvalue())

    @classmethod
    def load(cls, path: str | Path) -> SplitTable:
        with np.load(path) as z:
            if int(z["version"]) != TABLE_VERSION:
                raise DataError(f"{path}: split table version {int(z['version'])} != {TABLE_VERSION}; delete the file")
            offsets, pairs = z["offsets"].astype(np.int64), z["pairs"].astype(np.int64).reshape(-1, 2)
        if offsets.ndim != 1 or len(offsets) < 1 or offsets[-1] != len(pairs) or np.any(np.diff(offsets) < 0):
            raise DataError(f"{path}: corrupt StochasTok split table; delete the file so it is rebuilt")
        return cls(offsets, pairs)

    @classmethod
    def load_or_build(cls, tok: Tokenizer, cache_dir: str | Path) -> SplitTable:
        """The table of `tok`, cached at `<cache_dir>/stochastok/splits-<tokenizer hash>.npz`."""
        key = Hasher().update_json([TABLE_VERSION, tokenizer_fingerprint(tok)]).hexdigest()
        path = Path(cache_dir) / "stochastok" / f"splits-{key}.npz"
        if path.is_file():
            return cls.load(path)
        table = cls.build(tok)
        table.save(path)
        log.info("StochasTok split table: %d splits over %d tokens -> %s", table.n_splits, table.vocab_size, path)
        return table


# --- expansion -----------------------------------------------------------------------------------------------------
def expand_with_source(
    ids: Sequence[int] | np.ndarray, table: SplitTable, p: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Expand one sequence; returns (new ids [n'], index of the original token each new token comes from [n']).

    The source index lets callers carry any per-token attribute (loss mask, segment id) over to the pieces.
    Node k holds `tok[k]`; the pieces of original token i form a chain i -> nxt[i] -> ... -> -1 (a split keeps
    the left piece in its node and links the right piece after it). `pool` lists the live nodes in arbitrary
    order, so `pool[floor(u * len(pool))]` is a uniform position of the current sequence. Python work is
    O(p * n); the O(n) parts (copies, assembly) run in numpy.
    """
    arr = np.asarray(ids, dtype=np.int64).reshape(-1)
    n = int(arr.shape[0])
    n_attempts = int(np.floor(p * n)) if n else 0
    if n_attempts == 0:
        return arr.copy(), np.arange(n, dtype=np.int64)
    offs, counts, left, right = table._lists()
    v = len(counts)
    u = rng.random(2 * n_attempts).tolist()  # position draw, split draw, per attempt
    tok = arr.tolist() + [0] * n_attempts
    nxt = [-1] * (n + n_attempts)
    src = list(range(n)) + [0] * n_attempts
    pool = list(range(n))
    touched: list[int] = []  # original positions split at least once
    flag = bytearray(n)
    size = n
    for k in range(n_attempts):
        node = pool[int(u[2 * k] * size)]
        t = tok[node]
        c = counts[t] if 0 <= t < v else 0
        if not c:
            continue  # the attempt is spent
        j = offs[t] + int(u[2 * k + 1] * c)
        new = size  # next free node
        tok[node], tok[new] = left[j], right[j]
        nxt[new], nxt[node] = nxt[node], new
        s = src[node]
        src[new] = s
        if not flag[s]:
            flag[s] = 1
            touched.append(s)
        pool.append(new)
        size += 1
    if size == n:
        return arr.copy(), np.arange(n, dtype=np.int64)
    chains: dict[int, list[int]] = {}
    for s in touched:
        chain, node = [], s
        while node != -1:
            chain.append(tok[node])
            node = nxt[node]
        chains[s] = chain
    n_pieces = np.ones(n, dtype=np.int64)
    keys = np.fromiter(chains, dtype=np.int64, count=len(chains))
    n_pieces[keys] = [len(chains[s]) for s in chains]
    starts = np.cumsum(n_pieces) - n_pieces
    out_tok = np.empty(size, dtype=np.int64)
    keep = n_pieces == 1
    out_tok[starts[keep]] = arr[keep]
    for s, chain in chains.items():
        out_tok[starts[s] : starts[s] + len(chain)] = chain
    return out_tok, np.repeat(np.arange(n, dtype=np.int64), n_pieces)


def expand(ids: Sequence[int] | np.ndarray, table: SplitTable, p: float, rng: np.random.Generator) -> np.ndarray:
    """StochasTok-expand one sequence of token ids (see `expand_with_source`)."""
    return expand_with_source(ids, table, p, rng)[0]


def item_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The generator of one (epoch, item): independent of worker, rank and resume point."""
    return np.random.default_rng([int(seed), 0x5707, int(epoch), int(index)])


# --- on the fly: packed pretraining rows ----------------------------------------------------------------------------
class EpochTaggedSampler(InfiniteSampler):
    """`InfiniteSampler` that yields `(index, epoch)`, so the dataset can seed each epoch's expansion afresh.

    Same stream, sharding and resume semantics as the parent (docs/data.md); only the yielded key differs.
    """

    def __iter__(self) -> Iterator[tuple[int, int]]:  # type: ignore[override]
        g = self.start_sample + self.rank
        cached_epoch, perm = -1, None
        while True:
            e, pos = divmod(g, self.n)
            if e != cached_epoch:
                cached_epoch, perm = e, epoch_permutation(self.n, self.seed, e, self.shuffle)
            yield int(perm[pos]), int(e)
            g += self.world_size


def rows_with_headroom(
    flat: np.ndarray, lengths: np.ndarray, seq_len: int, p: float, eos_id: int, pad_id: int
) -> PackedRows:
    """Pack the unexpanded stream into rows short enough that their expansion always fits `seq_len + 1`.

    A row of `m` tokens gains at most `floor(p * m)` tokens, so `m = floor((seq_len + 1) / (1 + p))` never
    overflows: no expanded token is ever truncated away, at the price of some padding (the expected gain is
    `p * m * P(splittable)`, less than the worst case).
    """
    width = math.floor((seq_len + 1) / (1.0 + p) + 1e-9)  # not `//`: 65 // 1.3 == 49.0 (65 / 1.3 = 49.999...)
    while width + int(np.floor(p * width)) > seq_len + 1:  # float rounding guard
        width -= 1
    if width < 2:
        raise DataError(
            f"data.stochastok.p={p} leaves rows of {width} token(s) for data.seq_len={seq_len}; "
            "raise data.seq_len or lower data.stochastok.p"
        )
    return pack_flat(flat, lengths, width - 1, eos_id, pad_id)


class StochasTokPackedDataset(Dataset):
    """Packed pretraining rows, StochasTok-expanded when fetched (in DataLoader workers).

    Keys are `(index, epoch)` from `EpochTaggedSampler` (a bare int means epoch 0). A split token inherits its
    segment id, so labels, `-100` at document boundaries, position ids and the attention mask follow the
    expansion exactly as they follow ordinary tokens (`row_to_item`). Rows are then right-padded to
    `seq_len + 1`.
    """

    def __init__(self, rows: PackedRows, table: SplitTable, p: float, seed: int, seq_len: int, pad_id: int) -> None:
        self.rows, self.table, self.p, self.seed = rows, table, check_p(p), int(seed)
        self.width, self.pad_id = int(seq_len) + 1, int(pad_id)

    def __len__(self) -> int:
        return len(self.rows)

    def expanded_row(self, index: int, epoch: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """(tokens [seq_len+1], segments [seq_len+1]) of row `index` in epoch `epoch`."""
        out_tok = np.empty(self.width, dtype=np.int64)
        out_seg = np.empty(self.width, dtype=np.int64)
        self._expand_into(index, epoch, out_tok, out_seg)
        return out_tok, out_seg

    def _expand_into(self, index: int, epoch: int, out_tok: np.ndarray, out_seg: np.ndarray) -> None:
        """Write row `index`'s expansion for `epoch`, right-padded, into `out_tok` / `out_seg` ([seq_len+1])."""
        tokens, segments = self.rows.tokens[index], self.rows.segments[index]
        n_real = int(np.count_nonzero(segments))  # padding is only ever at the end of the last row
        new_tok, src = expand_with_source(tokens[:n_real], self.table, self.p, item_rng(self.seed, epoch, index))
        n = len(new_tok)
        if n > self.width:  # impossible by rows_with_headroom; a bug, not a user error
            raise AssertionError(f"expanded row {index} has {n} > {self.width} tokens")
        out_tok[:n] = new_tok
        out_tok[n:] = self.pad_id
        out_seg[:n] = segments[src]
        out_seg[n:] = 0

    @staticmethod
    def _key(key: int | tuple[int, int]) -> tuple[int, int]:
        return (int(key[0]), int(key[1])) if isinstance(key, tuple) else (int(key), 0)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, torch.Tensor]:
        return row_to_item(*self.expanded_row(*self._key(key)))

    def __getitems__(self, keys: list[int | tuple[int, int]]) -> Batch:
        """The DataLoader's batched fetch: rows are expanded one by one (each with its own (epoch, index) seed, so
        the batch equals the per-item path), then converted to tensors once (`rows_to_batch`)."""
        out_tok = np.empty((len(keys), self.width), dtype=np.int64)  # [B, T+1]
        out_seg = np.empty((len(keys), self.width), dtype=np.int64)  # [B, T+1]
        for b, key in enumerate(keys):
            self._expand_into(*self._key(key), out_tok[b], out_seg[b])
        return Batch(rows_to_batch(out_tok, out_seg))


# --- offline ---------------------------------------------------------------------------------------------------------
class _ExpandBatch:
    """Picklable batched `datasets.map` function: expands `input_ids` and, piece by piece, every list column of the
    same length (masks, labels, position or segment ids: each piece inherits its token's value)."""

    def __init__(self, table: SplitTable, p: float, seed: int, column: str) -> None:
        self.table, self.p, self.seed, self.column = table, p, seed, column

    def __call__(self, batch: dict[str, list[Any]], indices: list[int]) -> dict[str, list[Any]]:
        out: dict[str, list[Any]] = {k: [] for k in batch}
        for j, idx in enumerate(indices):
            base = batch[self.column][j]
            ids, src = expand_with_source(base, self.table, self.p, item_rng(self.seed, 0, idx))
            out[self.column].append(ids.tolist())
            for k in batch:
                if k == self.column:
                    continue
                v = batch[k][j]
                if isinstance(v, list | np.ndarray) and len(v) == len(base):
                    out[k].append(np.asarray(v)[src].tolist())  # per-token column: follows the expansion
                elif isinstance(v, list | np.ndarray):
                    raise DataError(
                        f"expand_dataset: record {idx} column {k!r} has {len(v)} entries for {len(base)} tokens; a "
                        f"per-token column must match {self.column!r} (drop or realign it before expanding)"
                    )
                else:
                    out[k].append(v)
        return out


def expand_dataset(ds: Any, table: SplitTable, p: float, seed: int = 0, column: str = "input_ids") -> Any:
    """Offline StochasTok over a tokenized `datasets.Dataset` (one fixed segmentation, seeded per record).

    Every list column as long as `column` (e.g. SFT `target_mask`, labels, position ids) is expanded alongside,
    each piece inheriting its token's value; a list column of another length is an error. Pack or truncate the
    result afterwards, never before.
    """
    if column not in ds.column_names:
        raise DataError(f"expand_dataset: column {column!r} not in {ds.column_names}")
    return ds.map(_ExpandBatch(table, check_p(p), seed, column), batched=True, with_indices=True, desc="stochastok")
