"""Write n digits drawn from the prompt's digits, n unknown to the prompt: the masked-diffusion task on which
<eos> overflow can show (docs/mdlm.md, "When does <eos> overflow happen?").

A record is `{prompt: "w:381=", response: "83118"}`: the prompt lists m distinct digits (m in `digits`, 2..4 by
default); the answer is n digits, each drawn uniformly from the prompt's, with n uniform in 1..max_len and
independent of the prompt. So the answer's length is uncertain (any of 1..max_len) and so is each content token
(1/m). That is what the failure needs: on copy/reverse the prompt fixes the length and every token, a calibrated
model knows where the end goes, and <eos> padding cannot cut an answer short (docs/results.md).

Under <eos> padding the canvas after the answer is all end tokens, so a calibrated denoiser is surer of an end
token at position i (p = P(n < i)) than of any digit (at most 1/m) from about the middle of the length range on;
committed end tokens raise p(eos) of their left neighbour, and the end spreads backwards to position 2.
`scripts/rainbow_oracle.py` runs the sampler on the exact posterior of this task and shows it: answers of 1 token
under <eos> padding and K = 1, long ones under K = 7.

Tokenizer: byte-level without merges (as `rainbow/copy`), one digit per token. Evaluation problems come from their
own seed; `valid_answer` says whether a decoded answer is allowed (1..max_len digits, each one of the prompt's).
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
from src.data.tasks.digit_copy import byte_vocab_size

GENERATOR_VERSION = 1
DEFAULT_DIGITS = (2, 4)  # m, the prompt's distinct digits: min, max


def problem(rng: random.Random, max_len: int, digits: tuple[int, int] = DEFAULT_DIGITS) -> tuple[str, str]:
    """(prompt, answer) of one problem: m distinct digits, then n ~ U{1..max_len} draws from them."""
    pool = rng.sample("0123456789", rng.randint(*digits))
    n = rng.randint(1, max_len)
    return f"w:{''.join(pool)}=", "".join(rng.choice(pool) for _ in range(n))


def check_task(max_len: int, digits: tuple[int, int] | list[int]) -> tuple[int, int]:
    lo, hi = (int(d) for d in digits)
    if max_len < 1:
        raise DataError(f"data.task.max_len must be >= 1, got {max_len}")
    if not 1 <= lo <= hi <= 10:
        raise DataError(f"data.task.digits={[lo, hi]} must be [min, max] distinct digits with 1 <= min <= max <= 10")
    return lo, hi


def eval_problems(n_eval: int, max_len: int, seed: int, digits: tuple[int, int] = DEFAULT_DIGITS
                  ) -> list[tuple[str, str]]:
    """Held-out (prompt, answer) pairs from their own seed."""
    rng = random.Random(seed * 7919 + 13)
    return [problem(rng, max_len, check_task(max_len, digits)) for _ in range(n_eval)]


def ensure_lengths_files(cache_dir: str | Path, max_len: int = 12, n_train: int = 50000, n_eval: int = 300,
                         seed: int = 0, digits: tuple[int, int] | list[int] = DEFAULT_DIGITS) -> Path:
    """Generate (once, cached, atomic) the training records as jsonl; returns its path. Records equal to a held-out
    problem (same prompt and answer) are dropped."""
    lo, hi = check_task(max_len, digits)
    name = f"digit-lengths-v{GENERATOR_VERSION}-L{max_len}-m{lo}-{hi}-n{n_train}-e{n_eval}-s{seed}.jsonl"
    path = Path(cache_dir) / "tasks" / name
    if not path.is_file():
        held = set(eval_problems(n_eval, max_len, seed, (lo, hi)))
        rng = random.Random(seed)
        lines: list[str] = []
        while len(lines) < n_train:
            p, a = problem(rng, max_len, (lo, hi))
            if (p, a) not in held:
                lines.append(json.dumps({"prompt": p, "response": a}))
        atomic_write_lines(path, lines)
    return path


def valid_answer(prompt: str, answer: str, max_len: int) -> bool:
    """An allowed answer: 1..max_len characters, each one of the prompt's digits."""
    allowed = set(prompt[2:-1])
    return 1 <= len(answer) <= max_len and set(answer) <= allowed


class LengthsTaskDataModule(CanvasDataModule):
    """The uncertain-length task on a canvas of `canvas` tokens (`data=rainbow_lengths`)."""

    def __init__(self, task: dict[str, Any], canvas: int, padding: str = "rainbow", n_pads: int = DEFAULT_N_PADS,
                 cache_dir: str = ".cache", train_canvases: list[int] | None = None, **kwargs: Any) -> None:
        self.task = {k: v for k, v in dict(task or {}).items() if v is not None}
        self.task.pop("kind", None)
        self.task["digits"] = check_task(int(self.task.get("max_len", 12)), self.task.get("digits", DEFAULT_DIGITS))
        if int(self.task.get("max_len", 12)) + 1 > canvas:
            raise DataError(f"data.task.max_len={self.task.get('max_len', 12)} needs a canvas of at least max_len + 1 "
                            f"tokens (data.canvas={canvas}): raise data.canvas or lower data.task.max_len")
        path = ensure_lengths_files(cache_dir, **self.task)
        kwargs.pop("tokenizer", None)
        kwargs.setdefault("sample_prompts", ["w:38=", "w:1592="])
        # Every arm reserves the same pads (K <= 7 uses the first K), so EOS and K = 1, 3, 7 share one vocabulary
        # and one model size: the arms differ in the layout only.
        reserve = max(DEFAULT_N_PADS, int(n_pads))
        super().__init__(source={"kind": "file", "path": str(path)}, canvas=canvas, padding=padding, n_pads=n_pads,
                         tokenizer={"vocab_size": byte_vocab_size(reserve), "n_reserved_pads": reserve},
                         cache_dir=cache_dir,
                         train_canvases=train_canvases, **kwargs)

    def eval_problems(self, n_eval: int | None = None) -> list[tuple[str, str]]:
        """The held-out problems of this task (length-robustness evaluation)."""
        t = self.task
        return eval_problems(n_eval or t.get("n_eval", 300), t.get("max_len", 12), t.get("seed", 0), t["digits"])

    def valid_answer(self, prompt: str, answer: str) -> bool:
        """Whether a decoded answer is allowed (the length evaluation's `valid@<m>x`)."""
        return valid_answer(prompt, answer, int(self.task.get("max_len", 12)))
