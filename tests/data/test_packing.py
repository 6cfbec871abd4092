from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from src.data.collate import stack_items
from src.data.packing import IGNORE_INDEX, PackedDataset, pack_documents

EOS, PAD = 1, 0


def _items(docs, seq_len):
    ds = PackedDataset(pack_documents(docs, seq_len, EOS, PAD))
    return ds, [ds[i] for i in range(len(ds))]


docs_strategy = st.lists(st.lists(st.integers(5, 50), min_size=0, max_size=30), min_size=1, max_size=12)


@settings(max_examples=60, deadline=None)
@given(docs=docs_strategy, seq_len=st.integers(2, 17))
def test_rows_concatenate_back_to_docs_joined_by_eos(docs, seq_len):
    ds, items = _items(docs, seq_len)
    stream = [t for d in docs for t in [*d, EOS]]
    rows = ds.rows.tokens
    assert rows.shape[1] == seq_len + 1
    flat = rows.reshape(-1)
    real = ds.rows.segments.reshape(-1) > 0
    assert flat[real].tolist() == stream  # no token lost, duplicated or reordered
    assert not real[len(stream) :].any() and real[: len(stream)].all()  # padding only at the very end
    assert (flat[~real] == PAD).all()


@settings(max_examples=60, deadline=None)
@given(docs=docs_strategy, seq_len=st.integers(2, 17))
def test_labels_are_next_token_within_a_document(docs, seq_len):
    ds, items = _items(docs, seq_len)
    for row, seg, it in zip(ds.rows.tokens, ds.rows.segments, items):
        assert it["input_ids"].tolist() == row[:-1].tolist()
        for t in range(seq_len):
            same_doc = seg[t + 1] == seg[t] and seg[t + 1] > 0
            assert it["labels"][t] == (row[t + 1] if same_doc else IGNORE_INDEX)


@settings(max_examples=60, deadline=None)
@given(docs=docs_strategy, seq_len=st.integers(2, 17))
def test_segments_and_positions_restart_at_document_boundaries(docs, seq_len):
    ds, items = _items(docs, seq_len)
    # global document index of every stream position, to check each row's segments against the truth
    doc_of = np.concatenate([np.full(len(d) + 1, i) for i, d in enumerate(docs)])
    for r, it in enumerate(items):
        seg, pos = it["segment_ids"], it["position_ids"]
        lo = r * (seq_len + 1)
        truth = doc_of[lo : lo + seq_len]
        n_real = len(truth)
        assert (it["attention_mask"][:n_real] == 1).all() and (it["attention_mask"][n_real:] == 0).all()
        assert (seg[n_real:] == 0).all() and (pos[n_real:] == 0).all()
        # segments number the documents of the row 1, 2, ... in order
        assert seg[:n_real].tolist() == (truth - truth[0] + 1).tolist()
        for t in range(n_real):
            expect = 0 if t == 0 or truth[t] != truth[t - 1] else pos[t - 1] + 1
            assert pos[t] == expect


def test_hand_example():
    # docs [5 6 7] [8] -> stream 5 6 7 E 8 E ; seq_len 3 -> rows [5 6 7 E] [8 E P P]
    _, (a, b) = _items([[5, 6, 7], [8]], 3)
    assert a["input_ids"].tolist() == [5, 6, 7] and a["labels"].tolist() == [6, 7, EOS]
    assert b["input_ids"].tolist() == [8, EOS, PAD]
    assert b["labels"].tolist() == [EOS, IGNORE_INDEX, IGNORE_INDEX]
    assert b["segment_ids"].tolist() == [1, 1, 0] and b["attention_mask"].tolist() == [1, 1, 0]
    _, (c,) = _items([[5, 6], [7]], 4)  # [5 6 E 7 E]: eos->7 crosses documents, so it carries no loss
    assert c["labels"].tolist() == [6, EOS, IGNORE_INDEX, EOS]
    assert c["segment_ids"].tolist() == [1, 1, 1, 2] and c["position_ids"].tolist() == [0, 1, 2, 0]
    for k, v in c.items():
        assert v.dtype == torch.long, k


@settings(max_examples=40, deadline=None)
@given(docs=docs_strategy, seq_len=st.integers(2, 17), data=st.data())
def test_batched_fetch_equals_stacked_items(docs, seq_len, data):
    """The DataLoader fetches whole batches (`__getitems__`, vectorised); they must equal the per-row items."""
    ds, items = _items(docs, seq_len)
    idx = data.draw(st.lists(st.integers(0, len(ds) - 1), min_size=1, max_size=8))
    batch = stack_items(ds.__getitems__(idx))
    assert set(batch) == set(items[0])
    for k, v in batch.items():
        assert v.shape == (len(idx), seq_len) and v.dtype == torch.long, k
        assert torch.equal(v, torch.stack([items[i][k] for i in idx])), k


def test_seq_len_must_be_positive():
    with pytest.raises(ValueError):
        pack_documents([[1]], 0, EOS, PAD)
