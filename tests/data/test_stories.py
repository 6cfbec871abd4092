from __future__ import annotations

import json
import re

from src.data.tasks.stories import NAMES, ensure_stories_jsonl, generate_stories


def test_stories_are_seeded_short_and_pronoun_consistent():
    a, b = generate_stories(300, seed=1), generate_stories(300, seed=1)
    assert a == b and a != generate_stories(300, seed=2)
    assert len(set(a)) > 200  # varied enough to generalise from, small enough to learn
    pron = dict(NAMES)
    for s in a:
        sentences = re.findall(r"[^.]+\.", s)
        assert 1 <= len(sentences) <= 4, s
        hero = next(n for n in pron if re.search(rf"\b{n}\b", sentences[0]))
        other = "she" if pron[hero] == "he" else "he"
        assert not re.search(rf"\b{other}\b", s, flags=re.IGNORECASE), s


def test_corpus_file_is_written_once_under_the_cache_dir(tmp_path):
    path = ensure_stories_jsonl(tmp_path, n_docs=50, seed=0)
    assert path.is_relative_to(tmp_path)
    mtime = path.stat().st_mtime_ns
    assert ensure_stories_jsonl(tmp_path, n_docs=50, seed=0) == path and path.stat().st_mtime_ns == mtime
    texts = [json.loads(line)["text"] for line in path.read_text().splitlines()]
    assert texts == generate_stories(50, seed=0)
