"""The StochasTok language games: six 4-option questions about the letters inside common English words.

Games (spec): which word has the most of letter X; contains substring S; starts with X; ends with X; longest;
shortest. Exactly one option is right (generation rejects ties). A model answers by the highest option
log-likelihood (src/callbacks/task_eval.py), so the games need no generation and no answer parsing.

Why the split into pretraining corpus / fine-tuning questions / held-out questions: with a word-level BPE every
common word is one token, so answering needs spelling knowledge that only StochasTok pretraining exposes.
The pretraining corpus is sentences of the same words (a sparse word-bigram chain, so that a word's identity
matters for what follows and the split and unsplit forms must mean the same); the games are then fine-tuned
deterministically on questions about `1 - heldout` of the words and evaluated on questions whose options all
come from the held-out words, which fine-tuning never asked about.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from src.data.cache import atomic_write_lines
from src.data.errors import DataError

GENERATOR_VERSION = 1
GAMES = ("most_letter", "contains", "starts_with", "ends_with", "longest", "shortest")
LETTERS = "abcdefghijklmnopqrstuvwxyz"


def word_list(n_words: int = 1000, min_len: int = 3, max_len: int = 10) -> list[str]:
    """The `n_words` most frequent lowercase ASCII English words of `wordfreq` with min_len..max_len letters."""
    try:
        from wordfreq import top_n_list
    except ImportError:  # pragma: no cover - a dependency of the project
        raise DataError("the language games need wordfreq: pip install -c constraints.txt wordfreq") from None
    words = [w for w in top_n_list("en", 20 * n_words) if w.isascii() and w.isalpha() and w.islower()]
    words = [w for w in dict.fromkeys(words) if min_len <= len(w) <= max_len][:n_words]
    if len(words) < n_words:
        raise DataError(f"wordfreq has only {len(words)} words of {min_len}..{max_len} letters; lower n_words")
    return words


def _pick(game: str, words: list[str], rng: random.Random) -> tuple[str, list[str], int] | None:
    """(question text, 4 options, index of the answer) or None when this draw has no unique answer."""
    if game in ("starts_with", "ends_with", "contains"):
        target = rng.choice(words)
        if game == "contains":
            i = rng.randrange(len(target) - 1)
            key, test, text = target[i : i + 2], (lambda w, k: k in w), "contains"
        elif game == "starts_with":
            key, test, text = target[0], (lambda w, k: w.startswith(k)), "starts with"
        else:
            key, test, text = target[-1], (lambda w, k: w.endswith(k)), "ends with"
        others = [w for w in rng.sample(words, min(len(words), 40)) if not test(w, key)][:3]
        if len(others) < 3:
            return None
        options = [target, *others]
        rng.shuffle(options)
        return f"which word {text} {key}", options, options.index(target)
    options = rng.sample(words, 4)
    if game == "most_letter":
        letter = rng.choice(rng.choice(options))
        scores = [w.count(letter) for w in options]
        question = f"which word has the most {letter}"
    elif game == "longest":
        scores, question = [len(w) for w in options], "which word is the longest"
    elif game == "shortest":
        scores, question = [-len(w) for w in options], "which word is the shortest"
    else:
        raise DataError(f"unknown language game {game!r}; known: {GAMES}")
    best = max(scores)
    if scores.count(best) != 1:
        return None
    return question, options, scores.index(best)


def make_question(game: str, words: list[str], rng: random.Random) -> dict[str, Any]:
    """One question record: prompt, options, answer index, and the SFT response (the right option)."""
    while True:
        picked = _pick(game, words, rng)
        if picked is not None:
            break
    question, options, answer = picked
    prompt = f"{question}: {', '.join(options)}. answer:"
    return {"game": game, "prompt": prompt, "options": [f" {o}" for o in options], "answer": answer,
            "response": f" {options[answer]}"}


def bigram_corpus(words: list[str], n_docs: int, rng: random.Random, fanout: int = 3) -> list[str]:
    """Documents that walk a fixed sparse word-bigram chain: each word has `fanout` possible successors."""
    succ = {w: rng.sample(words, fanout) for w in words}
    docs = []
    for _ in range(n_docs):
        w = rng.choice(words)
        out = [w]
        for _ in range(rng.randint(8, 16)):
            w = rng.choice(succ[w])
            out.append(w)
        docs.append(" ".join(out) + ".")
    return docs


def split_words(words: list[str], heldout: float, seed: int) -> tuple[list[str], list[str]]:
    """(fine-tuning words, held-out words): a seeded split of the word list."""
    shuffled = list(words)
    random.Random(seed).shuffle(shuffled)
    n_held = round(heldout * len(words))
    if n_held and n_held < 8:
        raise DataError(f"heldout={heldout} leaves {n_held} held-out words; 4-option questions need at least 8")
    return shuffled[n_held:], shuffled[:n_held]


def eval_questions(n_words: int, heldout: float, n_per_game: int, seed: int,
                   seen: bool = False) -> list[dict[str, Any]]:
    """Evaluation questions: options from the held-out words (or all words when heldout=0); with ``seen=True``
    from the fine-tuning words instead (new questions about words fine-tuning did ask about: a diagnostic that
    separates "never learned the game" from "learned it but cannot spell unseen words")."""
    words = word_list(n_words)
    train_w, held_w = split_words(words, heldout, seed)
    rng = random.Random(seed * 1_000_003 + (29 if seen else 17))
    pool = train_w if seen else (held_w or words)
    return [make_question(g, pool, rng) for g in GAMES for _ in range(n_per_game)]


def ensure_langgame_files(
    cache_dir: str | Path,
    n_words: int = 1000,
    n_docs: int = 20000,
    n_finetune: int = 12000,
    heldout: float = 0.2,
    seed: int = 0,
) -> dict[str, Path]:
    """Generate (once, cached, atomic) `pretrain` text and `finetune` prompt/response JSONL files."""
    root = Path(cache_dir) / "tasks"
    tag = f"langgame-v{GENERATOR_VERSION}-w{n_words}-h{heldout}-s{seed}"
    paths = {"pretrain": root / f"{tag}-corpus-n{n_docs}.jsonl", "finetune": root / f"{tag}-ft-n{n_finetune}.jsonl"}
    words = None
    if not paths["pretrain"].is_file():
        words = word_list(n_words)
        docs = bigram_corpus(words, n_docs, random.Random(seed))
        atomic_write_lines(paths["pretrain"], (json.dumps({"text": d}) for d in docs))
    if not paths["finetune"].is_file():
        words = words or word_list(n_words)
        train_w, _ = split_words(words, heldout, seed)
        rng = random.Random(seed + 1)
        recs = [make_question(GAMES[i % len(GAMES)], train_w, rng) for i in range(n_finetune)]
        atomic_write_lines(paths["finetune"], (json.dumps({"prompt": r["prompt"], "response": r["response"]})
                                               for r in recs))
    return paths


def langgame_prompts() -> list[str]:
    return ["which word starts with t: the, and, for, you. answer:", "the people"]
