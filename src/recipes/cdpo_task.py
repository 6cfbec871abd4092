"""What the cDPO recipe needs of a task: the questions to sample, a grader, and a held-out accuracy per stage.

`recipe.task.kind` picks one:

- `arith` (default of `experiment=cdpo/arith`): the built-in multi-step arithmetic task (`data.task`). Its grade
  checks every step, so the critical-token analysis (is the lowest-scored token in the first wrong step?) runs.
  Each stage's held-out accuracy is the config's own `arith_eval` callback (`<stage>/arith/acc`).
- `prompt`: your own `{prompt, answer}` records (`recipe.task.source`: a jsonl/parquet file or a Hugging Face
  dataset, as `data.source`), graded by the `reward=` group exactly as GRPO grades them. A solution is correct
  when its total reward is >= `recipe.task.correct_at` (1.0: a binary verifiable reward such as `reward=gsm8k`
  or `reward=boxed`). The last `recipe.task.n_eval` records are held out: never sampled, they are each stage's
  greedy accuracy (`<stage>/task/acc`, src/callbacks/task_eval.py: RewardEval). Solutions are grouped by the final
  answer the reward reads (`final_answer`: the gsm8k, boxed and arith rewards have one), else by their whole text.
  Such a task defines no steps, so the first-wrong-step analysis is skipped with a note (the token scores, their
  HTML picture and DPO/cDPO are unchanged).

`recipe.task.chat: true` asks every question as one user turn through the tokenizer's chat template (a chat model,
such as SmolLM2-Instruct after a chat SFT, `experiment=cdpo/smollm2`): at sampling, in every stage's held-out
evaluation, and in the prompts of the files the later stages train on (the contrastive sets and the pairs, whose
`question` field keeps the question as asked, for grading). Responses stay plain text, each followed by the end token,
which for a chat tokenizer is the end-of-turn marker the sampling stops at.

A grade is anything with `answer`, `correct`, `well_formed`, `first_wrong_step` and `step_spans` (the arith task's
`Grade`, or `TaskGrade` below); `grade(prompt, text)` is what sampling, the pictures and the analysis call.
"""

from __future__ import annotations

import abc
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from src.data.cache import atomic_write_lines
from src.data.errors import DataError
from src.runtime.errors import ConfigError

KINDS = ("arith", "prompt")


@dataclass(frozen=True)
class TaskGrade:
    """A solution graded by a reward: `answer` is the final answer as the reward reads it (None: none found)."""

    answer: str | None
    correct: bool
    well_formed: bool
    first_wrong_step: int | None = None  # a reward-graded task has no steps
    step_spans: tuple[tuple[int, int], ...] = ()


class CdpoTask(abc.ABC):
    """The recipe's view of a task (module docstring)."""

    acc_metric: str  # each training stage's held-out accuracy, without the stage prefix ("arith/acc")
    has_steps: bool  # whether grades carry a first wrong step (the critical-token analysis needs one)
    chat: bool = False  # recipe.task.chat: questions asked through the chat template (module docstring)

    @abc.abstractmethod
    def questions(self) -> list[dict[str, Any]]:
        """The training questions to sample, `{"prompt", "answer", ...}` each, in a fixed order."""

    @abc.abstractmethod
    def grade(self, prompt: str, text: str) -> Any:
        """The grade of solution `text` to question `prompt` (module docstring)."""

    def stage_callbacks(self, callbacks: DictConfig | None) -> dict[str, Any]:
        """Callbacks merged into a training stage's `callbacks` (the stage's own, given), for its held-out
        evaluation; none by default."""
        return {}

    def prompt_text(self, tok: Any, question: str) -> str:
        """The text a question is asked as: itself, or (`chat`) a user turn through the chat template."""
        from src.data.formats.sft import user_turn_text

        return user_turn_text(tok, question, "recipe.task.chat=true") if self.chat else question

    def reference_solution(self, row: dict[str, Any]) -> str | None:
        """A correct solution of a sampled question, for `debug=smoke` (whose 4-step base solves nothing)."""
        return None


class ArithTask(CdpoTask):
    """The built-in arithmetic task of `cfg.data.task`: questions from its prompts file, step-by-step grades."""

    acc_metric = "arith/acc"
    has_steps = True

    def __init__(self, cfg: DictConfig) -> None:
        from src.data.tasks.arith import ensure_arith_files

        task = OmegaConf.to_container(cfg.data.task, resolve=True)
        task.pop("kind", None)
        self.prompts_file = ensure_arith_files(cfg.paths.cache_dir, **task)["prompts"]

    def questions(self) -> list[dict[str, Any]]:
        return _jsonl(self.prompts_file)

    def grade(self, prompt: str, text: str) -> Any:
        from src.data.tasks.arith import grade

        return grade(prompt, text)

    def stage_callbacks(self, callbacks: DictConfig | None) -> dict[str, Any]:
        """The config's own `arith_eval` asks its questions as chats when the task does (a stage without one,
        `callbacks.arith_eval: null`, stays without)."""
        return {"arith_eval": {"chat": True}} if self.chat and (callbacks or {}).get("arith_eval") else {}

    def reference_solution(self, row: dict[str, Any]) -> str | None:
        from src.data.tasks.arith import parse_question

        problem = parse_question(row["prompt"])
        return problem.solution() if problem is not None else None


class PromptTask(CdpoTask):
    """Your `{prompt, answer}` records graded by a reward set (module docstring). `run_dir`: the held-out records
    are written to `<run_dir>/task/eval.jsonl`, the file every stage's RewardEval reads."""

    acc_metric = "task/acc"
    has_steps = False

    def __init__(self, cfg: DictConfig, run_dir: Path) -> None:
        from hydra.utils import instantiate

        from src.data.formats.base import Fields, FormatSettings
        from src.data.formats.registry import get_format
        from src.data.sources import load_source

        t = cfg.recipe.task
        if cfg.get("reward") is None:
            raise ConfigError("recipe.task.kind=prompt grades with the reward= group, and none is set; add e.g. "
                              "reward=gsm8k (numbers after ####) or reward=boxed (\\boxed{} answers)")
        self.reward = instantiate(cfg.reward, _convert_="all")
        self.correct_at, self.n_eval = float(t.get("correct_at", 1.0)), int(t.get("n_eval", 200))
        self.eval_tokens = int(t.get("eval_max_new_tokens") or cfg.recipe.sample.max_new_tokens)
        pf, af = str(t.get("prompt_field", "prompt")), str(t.get("answer_field", "answer"))
        fmt = get_format("prompt")(FormatSettings(fields=Fields(format="prompt", prompt=pf),
                                                  options={"answer_field": af, "skill_field": "skill"}))
        src = OmegaConf.to_container(t.source, resolve=True) if OmegaConf.is_config(t.source) else t.source
        ds = load_source(src, fmt, cfg.paths.cache_dir).dataset  # validated: a clear error per bad record
        rows = [{"prompt": r[pf], "answer": r[af], "skill": r["skill"]} for r in ds]
        if not 0 <= self.n_eval < len(rows):
            raise ConfigError(f"recipe.task.n_eval={self.n_eval} must be >= 0 and leave questions to sample: the "
                              f"source has {len(rows)} records; lower n_eval or add records")
        self.train = rows[: len(rows) - self.n_eval]
        self.eval_file = run_dir / "task" / "eval.jsonl"
        atomic_write_lines(self.eval_file, [json.dumps(r) for r in rows[len(self.train):]])
        self.answers: dict[str, str] = {}
        for r in self.train:
            if self.answers.setdefault(r["prompt"], r["answer"]) != r["answer"]:
                raise DataError(f"recipe.task.source: the prompt {r['prompt'][:60]!r} appears with two answers "
                                f"({self.answers[r['prompt']]!r} and {r['answer']!r}); fix or deduplicate the records")

    def questions(self) -> list[dict[str, Any]]:
        return list(self.train)

    def grade(self, prompt: str, text: str) -> TaskGrade:
        total = self.reward([prompt], [text], answer=[self.answers[prompt]]).total[0]
        if self.reward.reads_answers:
            answer = self.reward.final_answer(text)
            return TaskGrade(answer, total >= self.correct_at, answer is not None)
        return TaskGrade(text.strip(), total >= self.correct_at, True)

    def stage_callbacks(self, callbacks: DictConfig | None) -> dict[str, Any]:
        return {"task_eval": {"_target_": "src.callbacks.task_eval.RewardEval", "path": str(self.eval_file),
                              "reward": "${reward}", "correct_at": self.correct_at,
                              "max_new_tokens": self.eval_tokens, "chat": self.chat,
                              "limit": "${oc.select:eval_limit,null}"}}  # debug=smoke: a few questions

    def reference_solution(self, row: dict[str, Any]) -> str | None:
        answer = str(row["answer"])
        for text in (answer, f"#### {answer}", f"\\boxed{{{answer}}}"):
            if self.grade(row["prompt"], text).correct:
                return text
        return None


def build_task(cfg: DictConfig, run_dir: Path) -> CdpoTask:
    """The recipe's task from `recipe.task.kind` (default `arith`)."""
    t = cfg.recipe.get("task") or {}
    kind = t.get("kind", "arith")
    task: CdpoTask
    if kind == "arith":
        task = ArithTask(cfg)
    elif kind == "prompt":
        task = PromptTask(cfg, run_dir)
    else:
        raise ConfigError(f"recipe.task.kind={kind!r} is not one of {list(KINDS)}: arith (the built-in task) or "
                          "prompt (your {prompt, answer} records, recipe.task.source=..., graded by reward=)")
    task.chat = bool(t.get("chat", False))
    return task


def _jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(ln) for ln in Path(path).read_text().splitlines() if ln.strip()]
