"""The StochasTok task generators: one right option per question, held-out data never leaks into training."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from src.data.tasks.addition import ensure_addition_files, eval_pairs, problem
from src.data.tasks.langgame import GAMES, ensure_langgame_files, eval_questions, make_question, split_words, word_list


def satisfies(game: str, prompt: str, options: list[str], i: int) -> bool:
    """Independent re-statement of each game's rule: does option i answer the question?"""
    w = options[i].strip()
    words = [o.strip() for o in options]
    key = prompt.split(":")[0].split()[-1]
    if game == "starts_with":
        return w.startswith(key)
    if game == "ends_with":
        return w.endswith(key)
    if game == "contains":
        return key in w
    if game == "most_letter":
        return all(w.count(key) > o.count(key) for o in words if o != w)
    if game == "longest":
        return all(len(w) > len(o) for o in words if o != w)
    return all(len(w) < len(o) for o in words if o != w)


@pytest.mark.parametrize("game", GAMES)
def test_every_question_has_exactly_one_right_option(game: str) -> None:
    words = word_list(300)
    rng = random.Random(0)
    for _ in range(200):
        q = make_question(game, words, rng)
        assert len(set(q["options"])) == 4 and q["response"] == q["options"][q["answer"]]
        right = [i for i in range(4) if satisfies(game, q["prompt"], q["options"], i)]
        assert right == [q["answer"]], q


def test_heldout_words_never_appear_in_finetuning(tmp_path: Path) -> None:
    files = ensure_langgame_files(tmp_path, n_words=200, n_docs=300, n_finetune=600, heldout=0.2, seed=3)
    train_w, held_w = split_words(word_list(200), 0.2, 3)
    assert not set(train_w) & set(held_w) and len(held_w) == 40
    ft = [json.loads(line) for line in files["finetune"].read_text().splitlines()]
    ft_words = {w.strip(" .") for r in ft for w in r["prompt"].split(": ", 1)[1].replace(". answer:", "").split(", ")}
    assert ft_words <= set(train_w)
    for q in eval_questions(200, 0.2, 20, 3):
        assert {o.strip() for o in q["options"]} <= set(held_w)
    seen = eval_questions(200, 0.2, 20, 3, seen=True)
    assert all({o.strip() for o in q["options"]} <= set(train_w) for q in seen)
    assert {q["prompt"] for q in seen} - {r["prompt"] for r in ft}  # new questions, not the fine-tuning ones
    corpus = " ".join(json.loads(line)["text"] for line in files["pretrain"].read_text().splitlines())
    assert set(held_w) & set(corpus.replace(".", " ").split())  # pretraining does see the held-out words


def test_addition_documents_and_heldout_pairs(tmp_path: Path) -> None:
    assert problem(123, 989) == ("123+989=", "2111")  # 1112 reversed
    path = ensure_addition_files(tmp_path, n_docs=3000, n_eval=200, seed=1)["pretrain"]
    docs = [json.loads(line)["text"] for line in path.read_text().splitlines()]
    held = {f"{a}+{b}=" for a, b in eval_pairs(200, 1)}
    assert len(docs) == 3000 and not {d.split("=")[0] + "=" for d in docs} & held
    for d in docs[:100]:
        q, ans = d.split("=")
        a, b = map(int, q.split("+"))
        assert 100 <= a <= 999 and 100 <= b <= 999 and ans == str(a + b)[::-1]
