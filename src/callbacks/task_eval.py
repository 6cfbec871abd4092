"""Task evaluation callbacks: MCQ accuracy, exact-match addition, multi-step arithmetic accuracy.

Both run at the end of training (and, with `every_validation: true`, after each validation), log through the
trainer's loggers and expose `summary_metrics()`, which `RunArtifacts` merges into metrics.json.

- `LangGameEval`: each option is scored by its summed log-likelihood after the prompt (tokenized exactly as the
  SFT data: prompt and option separately); the highest wins. Accuracy per game and overall; chance is 0.25.
- `AdditionEval`: greedy decoding from `a+b=`; only the generated answer (up to `<eos>`) is compared with the
  reversed sum, never digits of the prompt (the reference evaluator's flaw). The question is given twice:
  tokenized as in training, and character by character (one token per character, a segmentation the
  deterministic model never saw).
- `ArithEval`: greedy solutions of held-out multi-step sums (src/data/tasks/arith.py), graded by their final
  answer; accuracy overall and per number of operands, and the share of well-formed solutions.
- `RewardEval`: greedy completions of your own held-out `{prompt, answer}` records (a jsonl file), scored by a
  reward set (the `reward=` group, as GRPO's); accuracy is the share whose total reward reaches `correct_at`.
"""

from __future__ import annotations

import abc
import json
import logging
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback

from src.data.collate import pad_rows
from src.models.logprobs import batch_logprobs

log = logging.getLogger(__name__)
IGNORE = -100


@torch.no_grad()
def option_logliks(backbone: torch.nn.Module, tok: Any, prompts: Sequence[str], options: Sequence[Sequence[str]],
                   batch_size: int = 64) -> torch.Tensor:
    """Summed log p(option | prompt) for every (question, option): `[Q, n_options]`."""
    rows: list[tuple[list[int], int]] = []  # (ids, number of prompt tokens)
    for p, opts in zip(prompts, options):
        p_ids = tok.encode(p)
        rows += [(p_ids + tok.encode(o), len(p_ids)) for o in opts]
    device = backbone.output_weight.device
    scores = torch.empty(len(rows))
    for s in range(0, len(rows), batch_size):
        chunk = rows[s : s + batch_size]
        # Each row reads ids[:-1]; only the option's tokens are scored (labels pre-shifted, -100 elsewhere).
        batch = pad_rows([ids[:-1] for ids, _ in chunk],
                         [[IGNORE] * (n - 1) + ids[n:] for ids, n in chunk], tok.pad_id)  # [B, T] each
        logp = batch_logprobs(backbone, {k: v.to(device) for k, v in batch.items()}).logp  # [B, T], 0 on IGNORE
        scores[s : s + len(chunk)] = logp.sum(1).float().cpu()
    return scores.view(len(prompts), -1)


@torch.no_grad()
def greedy_answers(module: Any, tok: Any, prompt_ids: Sequence[list[int]], max_new_tokens: int,
                   batch_size: int = 128) -> list[str]:
    """Greedy continuations (decoded, up to the first eos) of already-tokenized prompts, by the objective's own
    sampler (`Objective.sample_ids`)."""
    out: list[str] = []
    for s in range(0, len(prompt_ids), batch_size):
        rows = module.sample_ids(list(prompt_ids[s : s + batch_size]), max_new_tokens, 0.0)
        if rows is None:
            raise ValueError(f"{type(module).__name__} cannot generate text, so the addition task cannot be "
                             "evaluated on it; remove the addition_eval callback")
        for row in rows:
            cut = row.index(tok.eos_id) if tok.eos_id in row else len(row)
            out.append(tok.decode(row[:cut]))
    return out


def char_tokenize(tok: Any, text: str) -> list[int]:
    """One token per character (byte-level BPE: one per byte) — a segmentation never produced by the BPE."""
    return [i for ch in text for i in tok.encode(ch)]


def logger_step(trainer: pl.Trainer) -> int:
    """The step Lightning's own logging uses at this moment (`self.log` in the objective, validation metrics): the
    count of batches that stepped. It is the optimizer step for LM objectives but the generation batch for RL ones
    (GRPO with 2 PPO epochs makes 2 optimizer steps per batch), so task metrics logged at it share one x-axis with
    `train/*` and `val/*` in csv/metrics.csv (`trainer.global_step` put them at twice the step in RL runs)."""
    return int(trainer.fit_loop.epoch_loop._batches_that_stepped)


class _TaskEval(Callback, abc.ABC):
    prefix = "task"

    def __init__(self, every_validation: bool = False, at_start: bool = False, chat: bool = False) -> None:
        self.every_validation, self.at_start, self.chat = every_validation, at_start, chat
        self.results: dict[str, float] = {}
        self.start: dict[str, float] = {}  # at_start: the untrained model's metrics, as `<name>_start`
        self._scored_step: int | None = None  # the global step whose weights `results` scored

    @abc.abstractmethod
    def evaluate(self, module: pl.LightningModule, tok: Any) -> dict[str, float]:
        """Task metrics of the current model (no prefix); `module` is the objective (its `backbone`, `sample_ids`)."""

    def _encode(self, tok: Any, question: str) -> list[int]:
        """A question's prompt ids: as it is, or (`chat`) as one user turn through the tokenizer's chat template."""
        from src.data.formats.sft import user_turn_text

        return tok.encode(user_turn_text(tok, question, f"{type(self).__name__}(chat=true)") if self.chat else question)

    def _run(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        tok = getattr(pl_module, "tokenizer", None)
        if tok is None:
            return
        was_training = pl_module.training
        pl_module.eval()
        try:
            res = self.evaluate(pl_module, tok)
        finally:
            pl_module.train(was_training)
        self.results = {f"{self.prefix}/{k}": float(v) for k, v in res.items()}
        self._scored_step = trainer.global_step
        for lg in trainer.loggers:
            lg.log_metrics(self.results, step=logger_step(trainer))
        for k, v in self.results.items():
            trainer.callback_metrics[k] = torch.tensor(v)
        log.info("%s", " ".join(f"{k}={v:.3f}" for k, v in self.results.items()))

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.every_validation and not trainer.sanity_checking:
            self._run(trainer, pl_module)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """`at_start`: the starting model's score (step 0, not on resume), so one run shows what training gained."""
        if self.at_start and trainer.global_step == 0:
            self._run(trainer, pl_module)
            self.start = {f"{k}_start": v for k, v in self.results.items()}

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """The final score, unless the last validation (`every_validation`) already scored these weights: greedy
        decoding would repeat it exactly (a minute of SmolLM2 decoding on CPU)."""
        if self._scored_step != trainer.global_step:
            self._run(trainer, pl_module)

    def state_dict(self) -> dict[str, Any]:
        return {"start": dict(self.start)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.start = dict(state_dict.get("start", {}))

    def summary_metrics(self) -> dict[str, float]:
        """Merged into metrics.json by RunArtifacts (with the `_start` metrics of `at_start`)."""
        return {**self.start, **self.results}


class LangGameEval(_TaskEval):
    """MCQ accuracy on held-out language-game questions (src/data/tasks/langgame.py).

    Logs acc and acc_<game> on questions about held-out words, and (``seen_words=True``) acc_seen on new questions
    about the fine-tuning words: chance on both means the game itself was not learned; high acc_seen with chance
    acc means the model learned the game but cannot see inside unseen words (what StochasTok is meant to fix).
    """

    prefix = "langgame"

    def __init__(self, n_words: int = 1000, heldout: float = 0.2, seed: int = 0, n_per_game: int = 100,
                 every_validation: bool = False, seen_words: bool = True) -> None:
        super().__init__(every_validation)
        from src.data.tasks.langgame import eval_questions

        self.questions = eval_questions(n_words, heldout, n_per_game, seed)
        self.seen_questions = eval_questions(n_words, heldout, n_per_game, seed, seen=True) if seen_words else []

    @staticmethod
    def _right(backbone: torch.nn.Module, tok: Any, qs: list[dict[str, Any]]) -> list[bool]:
        scores = option_logliks(backbone, tok, [q["prompt"] for q in qs], [q["options"] for q in qs])  # [Q, 4]
        return (scores.argmax(1) == torch.tensor([q["answer"] for q in qs])).tolist()

    def evaluate(self, module: pl.LightningModule, tok: Any) -> dict[str, float]:
        qs, backbone = self.questions, module.backbone
        right = self._right(backbone, tok, qs)
        by_game: dict[str, list[bool]] = defaultdict(list)
        for q, r in zip(qs, right):
            by_game[q["game"]].append(r)
        res = {f"acc_{g}": sum(v) / len(v) for g, v in by_game.items()}
        res["acc"] = sum(right) / len(right)
        if self.seen_questions:
            seen = self._right(backbone, tok, self.seen_questions)
            res["acc_seen"] = sum(seen) / len(seen)
        return res


class AdditionEval(_TaskEval):
    """Exact match of the greedy answer on held-out `a+b=` problems, two tokenizations of the question."""

    prefix = "addition"

    def __init__(self, n_eval: int = 500, seed: int = 0, max_new_tokens: int = 6, every_validation: bool = False,
                 limit: int | None = None) -> None:
        super().__init__(every_validation)
        from src.data.tasks.addition import eval_pairs, problem

        self.problems = [problem(a, b) for a, b in eval_pairs(n_eval, seed)][:limit]
        self.max_new_tokens = max_new_tokens

    def evaluate(self, module: pl.LightningModule, tok: Any) -> dict[str, float]:
        qs = [q for q, _ in self.problems]
        answers = [a for _, a in self.problems]
        res = {}
        for name, ids in (("acc_train_tok", [tok.encode(q) for q in qs]),
                          ("acc_char_tok", [char_tokenize(tok, q) for q in qs])):
            got = greedy_answers(module, tok, ids, self.max_new_tokens)
            res[name] = sum(g.strip() == a for g, a in zip(got, answers)) / len(answers)
        return res


class ArithEval(_TaskEval):
    """Greedy accuracy of the final answer on the held-out multi-step arithmetic questions (the ones
    `ensure_arith_files` keeps out of every training file), per skill, plus the share of well-formed solutions.
    `chat: true` asks each question as a user turn through the tokenizer's chat template (generation prompt
    added), as the `sft_chat` records train a chat model to answer it."""

    prefix = "arith"

    def __init__(self, n_eval: int = 300, seed: int = 0, operands: Sequence[int] = (2, 4),
                 digits: Sequence[int] = (1, 2), max_new_tokens: int = 40, every_validation: bool = False,
                 limit: int | None = None, chat: bool = False, at_start: bool = False) -> None:
        super().__init__(every_validation, at_start, chat)
        from src.data.tasks.arith import eval_problems

        self.problems = eval_problems(n_eval, seed, tuple(operands), tuple(digits))[:limit]
        self.max_new_tokens = max_new_tokens

    def evaluate(self, module: pl.LightningModule, tok: Any) -> dict[str, float]:
        from src.data.tasks.arith import grade

        got = greedy_answers(module, tok, [self._encode(tok, p.question) for p in self.problems], self.max_new_tokens)
        grades = [grade(p, g) for p, g in zip(self.problems, got)]
        by_skill: dict[int, list[bool]] = defaultdict(list)
        for p, g in zip(self.problems, grades):
            by_skill[p.skill].append(g.correct)
        res = {f"acc_skill{k}": sum(v) / len(v) for k, v in sorted(by_skill.items())}
        res["acc"] = sum(g.correct for g in grades) / len(grades)
        res["well_formed"] = sum(g.well_formed for g in grades) / len(grades)
        return res


class RewardEval(_TaskEval):
    """Greedy accuracy on held-out `{prompt, answer}` records graded by a reward set: any verifiable task.

    Logs `task/acc` (share of completions whose total reward is >= `correct_at`), `task/reward` (mean total) and
    `task/answered` (share with an answer the reward can read, when it can read answers). `chat: true` asks each
    prompt as a user turn through the tokenizer's chat template, as ArithEval does. The cDPO recipe adds
    this callback to every stage when its task is your own records (src/recipes/cdpo_task.py).
    """

    prefix = "task"

    def __init__(self, path: str, reward: Any, prompt_field: str = "prompt", answer_field: str = "answer",
                 correct_at: float = 1.0, max_new_tokens: int = 64, every_validation: bool = False,
                 limit: int | None = None, at_start: bool = False, chat: bool = False) -> None:
        super().__init__(every_validation, at_start, chat)
        rows = [json.loads(ln) for ln in Path(path).read_text().splitlines() if ln.strip()][:limit]
        if not rows:
            raise ValueError(f"RewardEval: {path} holds no records; point it at a jsonl of held-out questions")
        self.prompts = [str(r[prompt_field]) for r in rows]
        self.answers = [str(r[answer_field]) for r in rows]
        self.reward, self.correct_at, self.max_new_tokens = reward, float(correct_at), max_new_tokens

    def evaluate(self, module: pl.LightningModule, tok: Any) -> dict[str, float]:
        got = greedy_answers(module, tok, [self._encode(tok, p) for p in self.prompts], self.max_new_tokens)
        scores = self.reward(self.prompts, got, answer=self.answers)
        n = len(got)
        res = {"acc": sum(t >= self.correct_at for t in scores.total) / n, "reward": sum(scores.total) / n}
        if getattr(self.reward, "reads_answers", False):
            res["answered"] = sum(self.reward.final_answer(g) is not None for g in got) / n
        return res
