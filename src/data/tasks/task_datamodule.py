"""`TaskDataModule`: an `LMDataModule` over a generated task (language games, addition, multi-step arithmetic).

`task: {kind: langgame | addition | arith, ...generator args}` picks the generator; `stage` picks one of its files:
`pretrain` (packed text, StochasTok-able) or its prompt/response fine-tuning questions (`finetune` for the
StochasTok tasks, `sft` for arith; SFT, always deterministic). The BPE is trained on the task's pretraining text
in every stage, so a pretrain run and the fine-tuning run that continues it share one tokenizer (same content
hash, same cached file).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from src.data.errors import DataError
from src.data.lm_datamodule import LMDataModule


def task_files(task: Mapping[str, Any], cache_dir: str | Path) -> dict[str, Path]:
    spec = dict(task)
    kind = spec.pop("kind", None)
    if kind == "langgame":
        from src.data.tasks.langgame import ensure_langgame_files

        return ensure_langgame_files(cache_dir, **spec)
    if kind == "addition":
        from src.data.tasks.addition import ensure_addition_files

        return ensure_addition_files(cache_dir, **spec)
    if kind == "arith":
        from src.data.tasks.arith import ensure_arith_files

        return ensure_arith_files(cache_dir, **spec)
    raise DataError(f"data.task.kind must be 'langgame', 'addition' or 'arith', got {kind!r}")


class TaskDataModule(LMDataModule):
    def __init__(self, task: Mapping[str, Any], stage: str = "pretrain", cache_dir: str = ".cache",
                 **kwargs: Any) -> None:
        self.task = dict(task)
        files = task_files(self.task, cache_dir)
        if stage not in files:
            raise DataError(
                f"data.stage={stage!r} is not a stage of task {self.task.get('kind')!r}; use one of {sorted(files)}"
            )
        self.stage = stage
        self._corpus = files["pretrain"]
        kwargs.setdefault("format", "pretrain" if stage == "pretrain" else "sft")
        super().__init__(source={"kind": "file", "path": str(files[stage])}, cache_dir=cache_dir, **kwargs)

    def _training_texts(self) -> list[str]:
        """Always the pretraining text: both stages get the identical BPE."""
        with open(self._corpus, encoding="utf-8") as f:
            return [json.loads(line)["text"] for line in f if line.strip()]

    def sample_prompts(self) -> list[str]:
        if self._sample_prompts:
            return list(self._sample_prompts)
        if self.task.get("kind") == "arith":
            from src.data.tasks.arith import arith_prompts

            return arith_prompts()
        if self.task.get("kind") == "addition":
            from src.data.tasks.addition import addition_prompts

            return addition_prompts()
        from src.data.tasks.langgame import langgame_prompts

        return langgame_prompts()
