"""Copy or reverse a digit string: the tiny length-robustness check for masked-diffusion LMs (docs/mdlm.md).

A record is `{prompt: "c:4821=", response: "4821"}` (copy) or `{prompt: "r:4821=", response: "1284"}` (reverse);
the digit string 1..max_len long (uniform length, then uniform digits; short prompts keep CPU sampling cheap).
Answers vary in length, which is what EOS padding gets wrong at long canvases. `data.task.ops=[f]` gives
`{prompt: "f:4821=", response: "8"}` (keep the digits >= 5, in order): an answer length (0..max_len) that the
prompt's length does not show, the uncertainty under which <eos> overflow is expected.

The tokenizer is byte-level without merges (vocab = 256 bytes + the specials), so one digit is one token and the
answer length in tokens is the string length. Evaluation problems (`eval_problems`) come from their own seed;
those with 3 or more digits in the prompt never appear in the training records (shorter strings are too few to
hold out).
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from src.data.cache import atomic_write_lines
from src.data.canvas_datamodule import CanvasDataModule
from src.data.errors import DataError
from src.data.rainbow import DEFAULT_N_PADS
from src.data.tokenizer import N_BYTES, SpecialTokens

GENERATOR_VERSION = 2
OPS = ("c", "r", "f")  # copy, reverse, filter (keep the digits >= 5, in order)
DEFAULT_OPS = ("c", "r")
HOLD_OUT_FROM = 3  # eval strings at least this long are excluded from training


def problem(op: str, digits: str) -> tuple[str, str]:
    """(prompt, answer) of one problem."""
    if op == "f":
        return f"{op}:{digits}=", "".join(d for d in digits if d >= "5")
    return f"{op}:{digits}=", digits if op == "c" else digits[::-1]


def _draw(rng: random.Random, max_len: int, ops: tuple[str, ...] = DEFAULT_OPS) -> tuple[str, str]:
    n = rng.randint(1, max_len)
    return rng.choice(ops), "".join(rng.choice("0123456789") for _ in range(n))


def check_ops(ops: tuple[str, ...]) -> tuple[str, ...]:
    ops = tuple(ops)
    if not ops or set(ops) - set(OPS):
        raise DataError(f"data.task.ops={list(ops)} must be a non-empty list of {list(OPS)} (c: copy, r: reverse, "
                        "f: keep the digits >= 5)")
    return ops


def eval_problems(n_eval: int, max_len: int, seed: int, ops: tuple[str, ...] = DEFAULT_OPS
                  ) -> list[tuple[str, str]]:
    """Held-out (prompt, answer) pairs, seeded, digit strings of uniform length in 1..max_len."""
    rng = random.Random(seed * 7919 + 11)
    return [problem(*_draw(rng, max_len, check_ops(ops))) for _ in range(n_eval)]


def ensure_copy_files(cache_dir: str | Path, max_len: int, n_train: int = 20000, n_eval: int = 200,
                      seed: int = 0, ops: tuple[str, ...] | list[str] = DEFAULT_OPS) -> Path:
    """Generate (once, cached, atomic) the training records as jsonl; returns its path."""
    if max_len < 1:
        raise DataError(f"data.task.max_len must be >= 1, got {max_len}")
    ops = check_ops(tuple(ops))
    tag = "" if ops == DEFAULT_OPS else "-" + "".join(ops)
    name = f"digit-copy-v{GENERATOR_VERSION}{tag}-L{max_len}-n{n_train}-e{n_eval}-s{seed}.jsonl"
    path = Path(cache_dir) / "tasks" / name
    if not path.is_file():
        held = {p for p, a in eval_problems(n_eval, max_len, seed, ops) if len(p) >= HOLD_OUT_FROM + 3}
        rng = random.Random(seed)
        lines: list[str] = []
        while len(lines) < n_train:
            prompt, answer = problem(*_draw(rng, max_len, ops))
            if prompt in held:
                continue
            lines.append(json.dumps({"prompt": prompt, "response": answer}))
        atomic_write_lines(path, lines)
    return path


def byte_vocab_size(n_pads: int) -> int:
    """256 bytes + pad, end, [MASK] and the reserved pads: a BPE of this size learns no merges."""
    return N_BYTES + len(SpecialTokens(n_reserved_pads=n_pads).all())


class CopyTaskDataModule(CanvasDataModule):
    """The copy/reverse task on a canvas of `canvas` tokens; answers 1..max_len digits (max_len = canvas // 2 by
    default, so the longest answer leaves room for its end token and padding)."""

    def __init__(self, task: dict[str, Any], canvas: int, padding: str = "rainbow", n_pads: int = DEFAULT_N_PADS,
                 cache_dir: str = ".cache", train_canvases: list[int] | None = None, **kwargs: Any) -> None:
        self.task = {k: v for k, v in dict(task or {}).items() if v is not None}
        self.task.setdefault("max_len", canvas // 2)
        self.task.pop("kind", None)
        path = ensure_copy_files(cache_dir, **self.task)
        kwargs.pop("tokenizer", None)
        kwargs.setdefault("sample_prompts", [problem("c", "31415")[0], problem("r", "2718")[0]])
        super().__init__(source={"kind": "file", "path": str(path)}, canvas=canvas, padding=padding, n_pads=n_pads,
                         tokenizer={"vocab_size": byte_vocab_size(n_pads)}, cache_dir=cache_dir,
                         train_canvases=train_canvases, **kwargs)

    def eval_problems(self, n_eval: int | None = None) -> list[tuple[str, str]]:
        """The held-out problems of this task (length-robustness evaluation)."""
        t = self.task
        return eval_problems(n_eval or t.get("n_eval", 200), t["max_len"], t.get("seed", 0),
                             tuple(t.get("ops", DEFAULT_OPS)))
