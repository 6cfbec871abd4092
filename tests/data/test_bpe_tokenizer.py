from __future__ import annotations

import pytest

import src.data.tokenizer as tokmod
from src.data.errors import DataError
from src.data.tokenizer import SpecialTokens, build_tokenizer, load_pretrained, train_bpe


def test_specials_get_the_lowest_ids_in_declaration_order(bpe):
    hf = bpe.hf
    assert (bpe.pad_id, bpe.eos_id, bpe.mask_id) == (0, 1, 2)
    assert hf.convert_tokens_to_ids(["<|pad_0|>", "<|pad_1|>", "<|sep|>"]) == [3, 4, 5]
    assert bpe.reserved_pad_ids == [3, 4]
    assert bpe.special_ids == frozenset(range(6))
    assert bpe.vocab_size == 320


def test_round_trip_including_unseen_unicode(bpe, corpus):
    for text in [*corpus[:20], "Zürich 日本語 🙂 tabs\tand\nnewlines", ""]:
        assert bpe.decode(bpe.encode(text)) == text


def test_special_tokens_are_atomic_and_never_merged(bpe):
    ids = bpe.encode("Tom<|endoftext|>Mia<|pad_1|>")
    assert bpe.eos_id in ids and bpe.reserved_pad_ids[1] in ids
    specials = SpecialTokens(n_reserved_pads=2, extras=("<|sep|>",)).all()
    for tok, i in bpe.hf.get_vocab().items():
        if i >= len(specials):  # learned tokens: no merge contains a special's text
            assert not any(s in tok for s in specials), tok


def test_trained_bpe_is_cached_and_not_retrained(corpus, tmp_path, monkeypatch):
    calls = []
    real = tokmod._train_bpe_uncached
    monkeypatch.setattr(tokmod, "_train_bpe_uncached", lambda *a: calls.append(1) or real(*a))
    t1 = train_bpe(corpus, 300, SpecialTokens(), tmp_path)
    [path] = list((tmp_path / "tokenizers").glob("bpe-*/tokenizer.json"))
    mtime = path.stat().st_mtime_ns
    t2 = train_bpe(corpus, 300, SpecialTokens(), tmp_path)
    assert len(calls) == 1 and path.stat().st_mtime_ns == mtime
    assert t1.encode(corpus[0]) == t2.encode(corpus[0])
    train_bpe(corpus[:-1], 300, SpecialTokens(), tmp_path)  # different corpus -> new key, retrained
    assert len(calls) == 2 and len(list((tmp_path / "tokenizers").glob("bpe-*"))) == 2
    assert not list(tmp_path.rglob("*.tmp"))  # atomic write leaves no temp files


def test_check_vocab_names_the_fix(bpe):
    bpe.check_vocab(320)
    with pytest.raises(DataError, match=r"ids up to 319.*vocab_size >= 320"):
        bpe.check_vocab(300)


def test_vocab_too_small_and_empty_corpus_are_clear_errors(tmp_path):
    with pytest.raises(DataError, match="at least 256 byte tokens"):
        train_bpe(["hello"], 100, SpecialTokens(), tmp_path)
    with pytest.raises(DataError, match="empty corpus"):
        train_bpe([], 300, SpecialTokens(), tmp_path)


def test_pretrained_from_local_dir_and_factory(bpe, tmp_path):
    bpe.hf.save_pretrained(tmp_path / "tok")
    # the saved tokenizer already has <|pad_0|>, <|pad_1|>: only <|pad_2|> is new and gets the next id
    tok = build_tokenizer({"pretrained": str(tmp_path / "tok"), "n_reserved_pads": 3, "mask": True}, None, tmp_path)
    assert tok.encode("Tom went home.") == bpe.encode("Tom went home.")
    assert tok.reserved_pad_ids == [3, 4, 320] and tok.vocab_size == 321 and tok.mask_id == 2
    with pytest.raises(DataError, match="vocab_size >= 321"):
        tok.check_vocab(320)
    plain = load_pretrained(str(tmp_path / "tok"))
    assert plain.vocab_size == 320 and plain.eos_id == 1


def test_factory_trains_lazily_and_rejects_unknown_keys(corpus, tmp_path):
    tok = build_tokenizer({"vocab_size": 300}, lambda: corpus, tmp_path)
    assert tok.vocab_size == 300 and tok.mask_id == 2
    with pytest.raises(DataError, match="unknown data.tokenizer keys"):
        build_tokenizer({"vocab": 300}, corpus, tmp_path)
