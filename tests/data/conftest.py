"""Small generated corpora and a session-wide trained BPE shared by the data tests."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from src.data.tasks.stories import generate_stories
from src.data.tokenizer import SpecialTokens, Tokenizer, train_bpe


@pytest.fixture(scope="session")
def corpus() -> list[str]:
    return generate_stories(400, seed=0)


@pytest.fixture(scope="session")
def bpe(corpus: list[str], tmp_path_factory: pytest.TempPathFactory) -> Tokenizer:
    cache = tmp_path_factory.mktemp("bpe-cache")
    return train_bpe(corpus, 320, SpecialTokens(n_reserved_pads=2, extras=("<|sep|>",)), cache)


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path
