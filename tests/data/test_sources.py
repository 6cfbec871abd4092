from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from src.data.errors import DataError
from src.data.sources import Fields, load_source
from tests.data.conftest import write_jsonl

PRETRAIN = Fields("pretrain")


def test_jsonl_txt_parquet_and_directories_load(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", [{"text": "one", "id": 1}, {"text": "two", "meta": {"x": [1]}}])
    (tmp_path / "b.txt").write_text("para one\nstill one\n\n  \n\npara two\n", encoding="utf-8")
    pq.write_table(pa.table({"text": ["three", "four"], "n": [1, 2]}), tmp_path / "c.parquet")
    assert load_source(str(tmp_path / "a.jsonl"), PRETRAIN, tmp_path).dataset["text"] == ["one", "two"]
    txt = load_source({"kind": "file", "path": str(tmp_path / "b.txt")}, PRETRAIN, tmp_path).dataset
    assert txt["text"] == ["para one\nstill one", "para two"]
    whole = load_source({"path": str(tmp_path / "b.txt"), "txt_split": "file"}, PRETRAIN, tmp_path).dataset
    assert len(whole) == 1
    both = load_source(str(tmp_path), PRETRAIN, tmp_path).dataset  # a directory: every supported file, sorted
    assert both["text"] == ["one", "two", "para one\nstill one", "para two", "three", "four"]
    assert both.column_names == ["text"]  # only the fields the format reads are kept


def test_malformed_jsonl_names_file_line_and_field(tmp_path):
    recs = [{"text": f"doc {i}"} for i in range(16)] + [{"txt": "oops"}]
    path = write_jsonl(tmp_path / "train.jsonl", recs)
    with pytest.raises(DataError) as e:
        load_source(str(path), PRETRAIN, tmp_path)
    msg = str(e.value)
    assert f"{path} line 17" in msg and 'field "text" is missing' in msg
    assert 'found keys: ["txt"]' in msg and "data.text_field" in msg


def test_invalid_json_and_wrong_type_errors(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n\n{"text": "unterminated\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"bad.jsonl line 3: invalid JSON"):
        load_source(str(bad), PRETRAIN, tmp_path)
    write_jsonl(tmp_path / "num.jsonl", [{"text": 3}])
    with pytest.raises(DataError, match=r'num.jsonl line 1: field "text" must be a string, got int'):
        load_source(str(tmp_path / "num.jsonl"), PRETRAIN, tmp_path)


def test_custom_text_field(tmp_path):
    path = write_jsonl(tmp_path / "t.jsonl", [{"body": "hello"}])
    assert load_source(str(path), Fields("pretrain", text="body"), tmp_path).dataset["body"] == ["hello"]


def test_empty_and_missing_sources_are_clear_errors(tmp_path):
    (tmp_path / "empty.jsonl").write_text("\n\n", encoding="utf-8")
    with pytest.raises(DataError, match="the dataset is empty"):
        load_source(str(tmp_path / "empty.jsonl"), PRETRAIN, tmp_path)
    with pytest.raises(DataError, match="does not exist.*data.source.path"):
        load_source(str(tmp_path / "nope.jsonl"), PRETRAIN, tmp_path)
    with pytest.raises(DataError, match="data.source.path is not set"):
        load_source({"kind": "file", "path": "???"}, PRETRAIN, tmp_path)


def test_parquet_missing_column_names_file_and_row(tmp_path):
    pq.write_table(pa.table({"txt": ["a"]}), tmp_path / "p.parquet")
    with pytest.raises(DataError, match=r'p.parquet row 0: field "text" is missing'):
        load_source(str(tmp_path / "p.parquet"), PRETRAIN, tmp_path)


def test_sft_records_validate_messages_and_prompt_response(tmp_path):
    sft = Fields("sft")
    ok = [
        {"prompt": "Q", "response": "A"},
        {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]},
    ]
    ds = load_source({"kind": "records", "records": ok}, sft, tmp_path).dataset
    assert ds[0]["prompt"] == "Q" and ds[1]["messages"][1]["content"] == "yo"
    path = write_jsonl(tmp_path / "s.jsonl", [ok[0], {"question": "Q", "answer": "A"}])
    with pytest.raises(DataError, match=r"s.jsonl line 2: SFT record has neither.*data.prompt_field"):
        load_source(str(path), sft, tmp_path)
    no_assistant = [{"messages": [{"role": "user", "content": "hi"}]}]
    with pytest.raises(DataError, match="no assistant message"):
        load_source({"kind": "records", "records": no_assistant}, sft, tmp_path)


def test_json_array_file(tmp_path):
    (tmp_path / "arr.json").write_text(json.dumps([{"text": "a"}, {"nope": 1}]), encoding="utf-8")
    with pytest.raises(DataError, match=r"arr.json record 1"):
        load_source(str(tmp_path / "arr.json"), PRETRAIN, tmp_path)


def test_fingerprint_follows_the_files_content_not_their_path_or_mtime(tmp_path):
    """The fingerprint keys the tokenized cache and the resume check: an identical rewrite or copy of the data must
    keep it (no re-tokenizing, no "other data" warning), and any edit must change it, even one that keeps the size
    and the mtime (which a path+size+mtime key would miss)."""
    import os
    import shutil

    path = tmp_path / "a.jsonl"
    write_jsonl(path, [{"text": "one"}, {"text": "two"}])
    fp = load_source(str(path), PRETRAIN, tmp_path).fingerprint
    write_jsonl(path, [{"text": "one"}, {"text": "two"}])  # the same bytes again
    os.utime(path, (1, 1))
    assert load_source(str(path), PRETRAIN, tmp_path).fingerprint == fp
    shutil.copy(path, tmp_path / "copy.jsonl")
    assert load_source(str(tmp_path / "copy.jsonl"), PRETRAIN, tmp_path).fingerprint == fp
    write_jsonl(path, [{"text": "one"}, {"text": "twO"}])  # same size; restore the old mtime
    os.utime(path, (1, 1))
    assert load_source(str(path), PRETRAIN, tmp_path).fingerprint != fp
