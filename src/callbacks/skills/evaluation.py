"""Per-skill evaluation: answer-token loss and greedy accuracy per skill, and the callback every curriculum extends.

`SkillEvalCallback` measures every skill's answer-token loss and greedy accuracy on its validation questions every
`eval_every` optimizer steps (each rank a shard, sums all-reduced, so every rank sees the same numbers), logs them
with the current mixture, keeps the history in its checkpoint state and writes `skills.json`,
`skill_accuracy.png` and `skill_mixture.png` into the run dir. Used alone it is the "random"/"stratified"
baseline's instrumentation (their mixture never changes).

Why evaluation happens in `on_train_batch_start` and not in Lightning's validation loop: checkpoints are saved at
the end of a step, *before* that step's validation; a run resumed from it would skip the evaluation and the
mixture update due at that step. Evaluating at the start of the next step, with state saying which step was last
evaluated, makes the resumed run redo exactly what the uninterrupted one did.

The mixture change reaches the data through `SkillDataModule.set_mixture(weights, from_position)`, with the
position = the max over ranks of the next sample not yet drawn (prefetch, workers), so all ranks switch at the
same global sample and a resumed run replays the same schedule (src/data/skill_sampler.py). Batches already
prefetched keep the old mixture: the new one trains from `applies_from_step`, recorded with each change (measured
2 steps after the decision with `num_workers=0`, 2 + prefetch_factor x num_workers with workers). The plots and
skills.json use that step; a warning says when the lag is a large share of a round.

The per-skill signal (`signal`): `loss`, the answer-token loss of skill records (LM training on data=lego,
addition, skills_jsonl); or `reward`, for RL on skill-labelled prompts (method=grpo, data.format=prompt): the
mean reward r_j of the policy's *greedy* completions of skill j's validation prompts, turned into a loss
L_j = reward_max − r_j, so that every curriculum reads "high L = skill still to learn" (Skill-It's
exp(η Σ A L) upweights low-reward skills). Greedy, not sampled: it is deterministic for given weights (two
evaluations differ only because the policy did), it draws nothing from the rollout sampler's generator (so
training rollouts and resume stay exactly as without the curriculum), it is one completion per prompt instead of
G, and it is the measure `val/reward` and the held-out accuracy use (run outside Lightning's autocast: under
bf16/16-mixed it decodes in full precision, so greedy choices can differ slightly). A sampled estimate would track the
expected training reward more closely (a skill the greedy policy solves may still fail at temperature 1), at G
times the cost and with a generator of its own to checkpoint. `auto` picks `reward` when the objective scores
completions with a reward (a `RolloutObjective`: GRPO, RLOO) and the data module serves prompts, else `loss`.

With a rollout objective the callback also logs each generation batch's sampled reward per skill,
`train/reward_skill<v>` (from the typed `RolloutRewards` the objective returns with each step).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback

from src.callbacks.log_images import log_images, run_title
from src.data.cache import atomic_write_text
from src.data.errors import DataError
from src.models.logprobs import IGNORE_INDEX, backbone_hidden, head_logprobs
from src.models.objective import Objective
from src.models.rollout import RolloutObjective, RolloutRewards
from src.plots.skills import plot_skill_history

log = logging.getLogger(__name__)
SIGNALS = ("auto", "loss", "reward")


@torch.no_grad()
def answer_stats(backbone: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """[nll sum, #answer tokens, #answers right, #answers] over the answer tokens (labels != -100) of one batch.

    An answer is right when the argmax at every one of its tokens is that token (teacher-forced), which is
    exactly when greedy decoding from the prompt reproduces it, end-of-sequence included: greedy exact match,
    without generating. For one-token answers (LEGO, addition) it is the greedy answer.
    """
    hidden = backbone_hidden(backbone, batch)  # [B, T, d]
    labels = batch["labels"]  # [B, T]
    sel = labels != IGNORE_INDEX  # [B, T]
    # Only the answer rows, in fp32 (a bf16 model is scored in fp32): the kernel never sees the prompt's rows.
    h, tgt = hidden[sel].float(), labels[sel]  # [n, d], [n]
    logp = head_logprobs(backbone, h, tgt, dtype=torch.float32)  # [n]
    row = sel.nonzero()[:, 0]  # [n]: the item each answer token belongs to
    weight = backbone.output_weight.float()  # [V, d]
    bias = backbone.output_bias
    wrong = torch.zeros(labels.shape[0], device=h.device)  # [B]: wrong tokens per item
    for i in range(0, h.shape[0], 2048):  # [<=2048, V] at a time: long answers x a large vocabulary stay small
        logits = h[i:i + 2048] @ weight.T + (0 if bias is None else bias.float())  # [c, V]
        wrong.index_add_(0, row[i:i + 2048], (logits.argmax(-1) != tgt[i:i + 2048]).float())
    has_answer = sel.any(1)  # [B]
    return torch.stack([-logp.sum(), torch.tensor(float(tgt.numel()), device=h.device),
                        (has_answer & (wrong == 0)).sum().float(), has_answer.sum().float()])


def rank_batches(trainer: pl.Trainer, dm: Any, skill: int, rank: int, world: int) -> list[tuple[Any, bool]]:
    """This rank's validation batches of `skill` as (batch, counts). Under several ranks, every rank gets as many
    batches as the busiest one: a rank with fewer (a shard one item short, or none) repeats the skill's first batch,
    marked not to count. Sharded strategies (FSDP, ZeRO-3) gather parameters in every forward, a collective that
    hangs unless all ranks run the same number of forwards; one all-reduce of the count per skill buys that."""
    batches = [(batch, True) for batch in dm.skill_val_batches(skill, rank, world)]
    if world > 1:
        local = torch.tensor(float(len(batches)), device=trainer.strategy.root_device)
        most = int(trainer.strategy.reduce(local, reduce_op=torch.distributed.ReduceOp.MAX).item())
        if len(batches) < most:
            filler = next(iter(dm.skill_val_batches(skill, 0, 1)))  # every skill has validation items (checked)
            batches += [(filler, False)] * (most - len(batches))
    return batches


def evaluate_skills(trainer: pl.Trainer, pl_module: pl.LightningModule, dm: Any) -> tuple[np.ndarray, np.ndarray]:
    """Per-skill (answer-token loss [k], greedy exact-match accuracy [k]) over the whole validation set, all ranks
    together."""
    rank, world = int(trainer.global_rank), int(trainer.world_size)
    sums = torch.zeros(dm.k, 4, device=pl_module.device)  # [k, (nll, answer tokens, answers right, answers)]
    was_training = pl_module.training
    pl_module.eval()
    for j in range(dm.k):
        for batch, counts in rank_batches(trainer, dm, j, rank, world):
            batch = {key: v.to(pl_module.device) for key, v in batch.items()}
            stats = answer_stats(pl_module.backbone, batch)
            sums[j] += stats if counts else 0
    pl_module.train(was_training)
    sums = trainer.strategy.reduce(sums, reduce_op="sum")  # identical on every rank
    loss = sums[:, 0] / sums[:, 1].clamp(min=1)  # [k] mean loss per answer token
    acc = sums[:, 2] / sums[:, 3].clamp(min=1)  # [k] greedy exact match per answer
    return loss.cpu().double().numpy(), acc.cpu().double().numpy()


@torch.no_grad()
def evaluate_skill_rewards(trainer: pl.Trainer, pl_module: pl.LightningModule, dm: Any) -> np.ndarray:
    """Per-skill mean reward `[k]` of the greedy completions of every skill's validation prompts (each rank a
    shard, sums all-reduced: identical on every rank). `pl_module.greedy_rewards(batch) -> (rewards [B], valid
    [B])` generates and scores (src/models/grpo.py); a rollout the reward dropped does not count."""
    rank, world = int(trainer.global_rank), int(trainer.world_size)
    exact = torch.float32 if pl_module.device.type == "mps" else torch.float64  # MPS has no float64
    sums = torch.zeros(dm.k, 2, device=pl_module.device, dtype=exact)  # [k, (reward sum, scored prompts)]
    was_training = pl_module.training
    pl_module.eval()
    for j in range(dm.k):
        for batch, counts in rank_batches(trainer, dm, j, rank, world):
            batch = {key: v.to(pl_module.device) if isinstance(v, torch.Tensor) else v for key, v in batch.items()}
            rewards, valid = pl_module.greedy_rewards(batch)  # [B], [B]
            if counts:
                sums[j, 0] += rewards[valid].to(exact).sum()
                sums[j, 1] += valid.to(exact).sum()
    pl_module.train(was_training)
    sums = trainer.strategy.reduce(sums, reduce_op="sum")
    unscored = [dm.skill_names[j] for j in range(dm.k) if float(sums[j, 1]) == 0]
    if unscored and trainer.global_rank == 0:  # reward 0 -> the largest L_j: the curriculum will push these skills
        log.warning("per-skill reward: the reward scored none of %s's validation completions (every call failed or "
                    "dropped them); counted as reward 0, so the curriculum upweights them", ", ".join(unscored))
    return (sums[:, 0] / sums[:, 1].clamp(min=1)).cpu().numpy()


def _reward_max_setting(value: float | str) -> float | str:
    if isinstance(value, str) and value.strip().lower() == "auto":
        return "auto"
    try:
        return float(value)
    except (TypeError, ValueError):
        raise DataError(f"curriculum.callback.reward_max={value!r} is neither a number nor auto (the reward's best "
                        "score, so that L_j = reward_max - r_j)") from None


def resolve_reward_max(setting: float | str, reward: Any) -> float:
    """The reward's best score: a number as configured, or with `auto` the objective's reward set's `max_total`
    (every reward function declares `max_score`; src/rewards/combine.py), or a bare reward callable's
    `max_score`. Why it matters: Skill-It weighs skill i by exp(η Σ_j A_ij L_j), so an offset c in every L_j
    multiplies skill i by exp(η c Σ_j A_ij): a wrong reward_max re-weights skills whose graph rows sum
    differently."""
    if setting != "auto":
        return float(setting)
    best = getattr(reward, "max_total", getattr(reward, "max_score", None))
    if best is None:
        raise DataError("curriculum.callback.reward_max=auto needs a reward whose functions declare their range "
                        "(min_score / max_score attributes, as src/rewards/arith.py does); yours does not: set "
                        "curriculum.callback.reward_max=<the reward's best score>")
    return float(best)


LOSS_ON_PROMPTS = ("curriculum.callback.signal=loss is the answer-token loss of skill records (data=lego, addition, "
                   "skills_jsonl); prompt data (data.format=prompt) has no answer labels and is scored by a reward: "
                   "use method=grpo with signal=reward (or auto)")
DIFFICULTY_ON_PROMPTS = ("curriculum=curriculum|anticurriculum orders examples by a reference model's answer loss, "
                         "which prompt data (data.format=prompt) has not; use curriculum=skillit, skill_curriculum, "
                         "skill_anticurriculum, random or stratified")


def curriculum_config_problem(data_cfg: Any, callback_cfg: Any) -> str | None:
    """What the callback would refuse at fit start, read from the config alone (None: nothing seen), so that a
    two-stage run can refuse it before its first stage trains (src/recipes/finetune.py)."""
    if (data_cfg or {}).get("format") != "prompt":
        return None
    if str((callback_cfg or {}).get("_target_", "")).endswith("DifficultyCurriculumCallback"):
        return DIFFICULTY_ON_PROMPTS
    if (callback_cfg or {}).get("signal") == "loss":
        return LOSS_ON_PROMPTS
    return None


def resolve_signal(signal: str, dm: Any, pl_module: pl.LightningModule) -> str:
    """`loss` or `reward` for this data module and objective (module docstring), or a DataError naming the fix."""
    can_reward = isinstance(pl_module, RolloutObjective)  # it generates and scores completions (greedy_rewards)
    supported = tuple(getattr(dm, "skill_signals", ("loss",)))
    if signal == "auto":
        signal = "reward" if can_reward and "reward" in supported else "loss"
    if signal == "loss" and "loss" not in supported:
        raise DataError(LOSS_ON_PROMPTS)
    if signal == "reward" and "reward" not in supported:
        raise DataError("curriculum.callback.signal=reward scores completions of skill-labelled prompts "
                        "(data.format=prompt, method=grpo); this data module gives answer-token losses: use "
                        "signal=loss (or auto)")
    if signal == "reward" and not can_reward:
        raise DataError(f"curriculum.callback.signal=reward needs an objective that generates and scores "
                        f"completions (method=grpo with a reward=); {type(pl_module).__name__} does not")
    return signal


def align_graph(graph: Any, graph_skills: list[str], data_skills: list[str], where: str) -> np.ndarray:
    """A learned graph in the data's skill order. The file names the skills it was learned on (a skills file's
    names are sorted unless data.task.skills orders them, so the same skills can come in another order)."""
    if sorted(graph_skills) != sorted(data_skills):
        raise DataError(f"{where} was learned on skills {graph_skills}, but the data has {data_skills}; learn a "
                        "graph on this data (scripts/learn_skills_graph.py) or give the matrix inline")
    a = np.asarray(graph, dtype=np.float64)
    order = [graph_skills.index(n) for n in data_skills]
    return a[np.ix_(order, order)] if a.shape == (len(order), len(order)) else a  # validate_graph names bad shapes


class SkillEvalCallback(Callback):
    """Per-skill loss/accuracy every `eval_every` steps (and at the end), the mixture history, plots and summary."""

    def __init__(self, eval_every: int = 100, eval_at_start: bool = True, signal: str = "auto",
                 reward_max: float | str = "auto") -> None:
        if eval_every < 1:
            raise ValueError(f"eval_every must be >= 1, got {eval_every}")
        if signal not in SIGNALS:
            raise DataError(f"curriculum.callback.signal={signal!r} is not one of {SIGNALS} (loss: answer-token "
                            "loss of skill records; reward: reward_max - mean greedy reward of skill prompts)")
        # the per-skill signal (module docstring); reward_max: the reward's best score, so L_j = reward_max - r_j
        self.signal, self.reward_max_cfg = signal, _reward_max_setting(reward_max)
        self.reward_max: float | None = None  # resolved at fit start (auto: from the reward's declared range)
        self.signal_used: str | None = None  # resolved at fit start
        self.eval_every = int(eval_every)
        # False: no evaluation of the untrained model at step 0. Its losses (≈ ln V on the answer token, ~8x a
        # trained model's) would sit in Skill-It's first window and all but decide round 2's mixture.
        self.eval_at_start = bool(eval_at_start)
        self.evals: list[dict[str, Any]] = []  # {"step", "loss": [k], "acc": [k]}
        self.mixtures: list[dict[str, Any]] = []  # {"step", "position", "weights": [k]}
        self.last_eval_step = -1
        self.skill_names: list[str] | None = None  # the data module's, for metrics.json keys

    # ---- state ---------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"evals": self.evals, "mixtures": self.mixtures, "last_eval_step": self.last_eval_step,
                "skill_names": self.skill_names}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.evals = list(state_dict["evals"])
        self.mixtures = list(state_dict["mixtures"])
        self.last_eval_step = int(state_dict["last_eval_step"])
        self.skill_names = state_dict.get("skill_names")  # absent in checkpoints before named skills

    # ---- hooks -----------------------------------------------------------------------------------------
    def _datamodule(self, trainer: pl.Trainer) -> Any:
        dm = trainer.datamodule
        if dm is None or not getattr(dm, "samples_by_skill", False):
            raise DataError(
                f"{type(self).__name__} needs a skill-aware data module (data=lego, addition or skills_jsonl; or "
                "prompt records with a `skill` field, data.format=prompt, and data.mixture set, which the "
                f"curriculum configs do), got {type(dm).__name__} without; pick such data or curriculum=none"
            )
        return dm

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        dm = self._datamodule(trainer)
        self.signal_used = resolve_signal(self.signal, dm, pl_module)
        if self.signal_used == "reward":
            self.reward_max = resolve_reward_max(self.reward_max_cfg, pl_module.reward_fn)
        updates = pl_module.optimizer_steps_per_batch if isinstance(pl_module, Objective) else 1
        if self.eval_every % updates:
            raise DataError(f"curriculum.callback.eval_every={self.eval_every} must be a multiple of the "
                            f"optimizer updates per batch ({updates}, method.ppo_epochs): steps advance by {updates}")
        if not dm.restored and not self.mixtures:
            self.start(trainer, pl_module, dm)
            self._record_mixture(trainer, dm, 0, 0)

    def start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, dm: Any) -> None:
        """Fresh run: set the initial mixture (the base class keeps the data module's own)."""

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        step = int(trainer.global_step)
        if step % self.eval_every == 0 and step != self.last_eval_step and (step > 0 or self.eval_at_start):
            self._evaluate(trainer, pl_module, step)
        self.update(trainer, pl_module, self._datamodule(trainer), step)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        """A rollout objective's sampled reward per skill of this generation batch: `train/reward_skill<v>`."""
        rewards = RolloutRewards.of(outputs) if isinstance(pl_module, RolloutObjective) else None
        for skill, value in (rewards.per_skill() if rewards is not None else {}).items():
            pl_module.log(f"train/reward_skill{skill}", value, batch_size=1, on_step=True, on_epoch=False)

    def update(self, trainer: pl.Trainer, pl_module: pl.LightningModule, dm: Any, step: int) -> None:
        """Change the mixture if due at this step (the base class never does)."""

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if int(trainer.global_step) != self.last_eval_step:
            self._evaluate(trainer, pl_module, int(trainer.global_step))

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.global_rank != 0 or not self.evals:
            return
        out = Path(trainer.default_root_dir)
        names = self._datamodule(trainer).skill_names
        self._write_history(trainer, finished=True)
        metric = self._metric()
        plot_skill_history(self.evals, self.mixtures, names, out, title=run_title(out), metric=metric)
        per_skill = "skill_reward" if metric == "reward" else "skill_accuracy"
        log_images(trainer, {per_skill: out / f"{per_skill}.png", "skill_mixture": out / "skill_mixture.png"})

    # ---- internals ---------------------------------------------------------------------------------------
    def _evaluate(self, trainer: pl.Trainer, pl_module: pl.LightningModule, step: int) -> None:
        dm = self._datamodule(trainer)
        metric = self._metric()
        if metric == "reward":  # L_j = reward_max - r_j: high = still to learn, as a loss (module docstring)
            acc = evaluate_skill_rewards(trainer, pl_module, dm)
            loss = self.reward_max - acc
        else:
            loss, acc = evaluate_skills(trainer, pl_module, dm)
        self.skill_names = list(dm.skill_names)
        self.evals.append({"step": step, "loss": loss.tolist(), metric: acc.tolist()})
        self.last_eval_step = step
        metrics = {f"skill/loss_{n}": float(x) for n, x in zip(dm.skill_names, loss)}
        metrics.update({f"skill/{metric}_{n}": float(x) for n, x in zip(dm.skill_names, acc)})
        metrics[f"skill/{metric}_mean"] = float(acc.mean())
        metrics.update({f"skill/weight_{n}": float(x) for n, x in zip(dm.skill_names, dm.current_weights())})
        for lg in trainer.loggers:
            lg.log_metrics(metrics, step=step)
        self._write_history(trainer, finished=False)

    def _write_history(self, trainer: pl.Trainer, finished: bool) -> None:
        """`skills.json` after every evaluation, not only at the end: a run stopped at a deadline (a GPU lent for
        minutes, a preempted job that never resumes) keeps its history up to its last evaluation, and
        scripts/skillit_results.py compares such runs at the last step they all reached (`finished` tells)."""
        if trainer.global_rank != 0:
            return
        atomic_write_text(Path(trainer.default_root_dir) / "skills.json", json.dumps(
            {"skills": list(self._datamodule(trainer).skill_names), "signal": self.signal_used, "evals": self.evals,
             "mixtures": self.mixtures, "finished": finished}, indent=1) + "\n")

    def _metric(self) -> str:
        """What an evaluation records next to the loss: `acc` (greedy answer accuracy) or `reward`."""
        return "reward" if self.signal_used == "reward" else "acc"

    def _record_mixture(self, trainer: pl.Trainer, dm: Any, step: int, position: int) -> None:
        """`step`: when the change was decided; `applies_from_step`: the first step trained on the new mixture
        only (samples up to `position` were drawn, some prefetched, with the old one)."""
        w = [float(x) for x in dm.current_weights()]
        per_step = int(dm.batch_size) * int(trainer.accumulate_grad_batches) * int(trainer.world_size)
        module = getattr(trainer, "lightning_module", None)  # None for a stand-in trainer (tests)
        updates = module.optimizer_steps_per_batch if isinstance(module, Objective) else 1  # GRPO: ppo_epochs
        applies = max(step, -(-int(position) // per_step) * updates)  # ceil
        self.mixtures.append({"step": step, "applies_from_step": applies, "position": int(position), "weights": w})
        round_len = max(1, int(trainer.max_steps) // max(1, int(getattr(self, "rounds", 1))))
        if applies - step > 0.1 * round_len:
            log.warning("mixture decided at step %d trains from step %d (prefetched batches keep the old one): "
                        "%d of a %d-step round; fewer data.num_workers or longer rounds shorten the lag",
                        step, applies, applies - step, round_len)
        for lg in trainer.loggers:
            lg.log_metrics({f"skill/weight_{n}": x for n, x in zip(dm.skill_names, w)}, step=applies)
        self._write_history(trainer, finished=False)

    def _set_mixture_everywhere(self, trainer: pl.Trainer, dm: Any, weights: np.ndarray, step: int) -> None:
        """Switch every rank at the same global position: the max over ranks of the next undrawn one."""
        if dm.sampler is None:
            pos = dm.set_mixture(weights)
        else:
            # long (float32 rounds positions above 2**24) and on the strategy's device (NCCL refuses CPU tensors)
            mine = torch.tensor(dm.sampler.next_undrawn_position(), dtype=torch.long,
                                device=trainer.strategy.root_device)
            pos = dm.set_mixture(weights, int(trainer.strategy.reduce(mine, reduce_op="max").item()))
        self._record_mixture(trainer, dm, step, pos)

    def summary_metrics(self) -> dict[str, Any]:
        """Final per-skill numbers (and the mean accuracy at half the steps) for metrics.json."""
        if not self.evals:
            return {}
        last = self.evals[-1]
        metric = "reward" if "reward" in last else "acc"
        names = self.skill_names or [f"skill{i + 1}" for i in range(len(last[metric]))]
        out: dict[str, Any] = {f"skill/{metric}_{n}": a for n, a in zip(names, last[metric])}
        out.update({f"skill/loss_{n}": x for n, x in zip(names, last["loss"])})
        out[f"skill/{metric}_mean"] = float(np.mean(last[metric]))
        half = min(self.evals, key=lambda e: abs(e["step"] - last["step"] / 2))
        out[f"skill/{metric}_mean_half"] = float(np.mean(half[metric]))
        out["skill/half_step"] = half["step"]
        out[f"skill/{metric}_auc"] = curve_area([e["step"] for e in self.evals],
                                                [float(np.mean(e[metric])) for e in self.evals])
        return out


def curve_area(steps: list[int], values: list[float]) -> float:
    """The area under a metric's curve over training, per step: the trapezoid integral from the first to the last
    evaluation divided by that span, i.e. the curve's time-average (a value in the metric's own units; one
    evaluation gives that value). Skill-It's claim is speed, which the area shows and the final value does not.

    Worked example: mean accuracies 0, 0.5, 1 at steps 0, 50, 150: (0 + 0.5) / 2 · 50 + (0.5 + 1) / 2 · 100 = 12.5
    + 75 = 87.5, over 150 steps: 0.5833."""
    if len(steps) == 1:
        return float(values[0])
    total = sum((b - a) * (u + v) / 2 for a, b, u, v in zip(steps, steps[1:], values, values[1:]))
    return float(total / (steps[-1] - steps[0])) if steps[-1] > steps[0] else float(values[-1])
