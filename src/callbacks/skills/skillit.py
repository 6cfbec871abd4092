"""Skill-It online mixing (Chen et al., NeurIPS 2023; docs/skillit.md): each round's mixture from the graph and the
last evaluations' per-skill losses (`src/data/skills_graph.py` holds the rule, this callback when it applies)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np

from src.callbacks.skills.evaluation import SkillEvalCallback, align_graph
from src.data.errors import DataError
from src.data.skills_graph import skillit_mixture, target_mask, validate_graph

log = logging.getLogger(__name__)


class SkillItCallback(SkillEvalCallback):
    """Skill-It online mixing (Algorithm 1): T rounds; each round's p from the last w evaluations and graph A.

    graph: a `[k, k]` list or a path to a yaml/json file holding one (e.g. written by
    scripts/learn_skills_graph.py); null = the data config's `skills_graph`. target_skills: indices (or
    skill names) whose columns count (fine-tuning for targets); null = all. signal, reward_max: the per-skill
    L_j (answer-token loss, or reward_max − mean greedy reward on RL prompts; src/callbacks/skills/evaluation.py).
    """

    def __init__(self, eta: float = 0.5, rounds: int = 6, window: int = 3, eval_every: int = 100,
                 graph: Any = None, target_skills: list[int | str] | None = None, eval_at_start: bool = True,
                 signal: str = "auto", reward_max: float | str = "auto") -> None:
        super().__init__(eval_every, eval_at_start, signal, reward_max)
        if rounds < 1 or window < 1 or eta < 0:
            raise ValueError(f"need rounds >= 1, window >= 1, eta >= 0; got {rounds}, {window}, {eta}")
        self.eta, self.rounds, self.window = float(eta), int(rounds), int(window)
        self.graph_cfg, self.target_skills = graph, target_skills
        self.round = 1  # rounds started so far (round 1 starts at fit start)
        self.graph: np.ndarray | None = None

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "round": self.round}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self.round = int(state_dict["round"])

    def _graph(self, dm: Any) -> np.ndarray:
        if self.graph is None:
            g = self.graph_cfg
            if isinstance(g, str):
                import yaml

                path = Path(g)
                if not path.is_file():
                    raise DataError(f"curriculum graph file {g} does not exist; run scripts/learn_skills_graph.py "
                                    "or give the matrix inline")
                doc = yaml.safe_load(path.read_text())
                g = doc.get("graph", doc) if isinstance(doc, dict) else doc
                if isinstance(doc, dict) and doc.get("skills") is not None and g is not None:
                    g = align_graph(g, [str(n) for n in doc["skills"]], list(dm.skill_names), str(path))
            if g is None:
                g = dm.skills_graph
            if g is None:
                raise DataError("Skill-It needs a skills graph: set data.skills_graph or curriculum.callback.graph")
            self.graph = validate_graph(g, dm.k, "Skill-It graph")
        return self.graph

    def round_start(self, t: int, max_steps: int) -> int:
        """First step of round t (1-based): rounds split max_steps evenly."""
        return (t - 1) * max_steps // self.rounds

    def window_holds_start(self, max_steps: int) -> bool:
        """Whether round 2's mixture is computed from a window that still holds the step-0 evaluation: evaluations
        at 0, e, 2e, ... up to round 2's first step (evaluated before the update there) number round_len // e + 1;
        the window keeps the last `window` of them. Example: 3000 steps, 6 rounds, e = 250, window 3 -> evaluations
        at 0, 250, 500 -> True (the H200 LEGO run); 6000 steps, e = 50 -> 21 evaluations -> False."""
        round_len = max(1, max_steps // self.rounds)
        return self.eval_at_start and self.rounds > 1 and round_len // self.eval_every + 1 <= self.window

    def start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, dm: Any) -> None:
        mask = target_mask(dm.k, self.target_skills, dm.skill_names)
        if self.eval_every > max(1, trainer.max_steps // self.rounds):
            log.warning("Skill-It: eval_every=%d > round length %d: rounds reuse old losses",
                        self.eval_every, trainer.max_steps // self.rounds)
        round_len = max(1, trainer.max_steps // self.rounds)
        if self.window_holds_start(trainer.max_steps):
            # Seen on LEGO with SmolLM2 (docs/results.md): step-0 losses of the untrained answer format (~8.7 on
            # every skill) stayed in round 2's window, and the graph's row sums turned them into a 99.6 % mixture
            # on one skill. The paper's schedule (1000-step rounds, evaluations every 250) never holds them.
            log.warning("Skill-It: round 2's window of %d evaluations still holds the step-0 one (the untrained "
                        "model's losses, often about ln V on every skill); it can decide round 2's mixture. "
                        "Evaluate more often (eval_every <= %d), use fewer rounds, or set "
                        "curriculum.callback.eval_at_start=false", self.window, round_len // self.window)
        self._check_pool(trainer, dm, round_len)
        dm.set_mixture(skillit_mixture(self._graph(dm), None, self.eta, mask))

    def _check_pool(self, trainer: pl.Trainer, dm: Any, round_len: int) -> None:
        """Warn when a round that puts all its weight on one skill would cycle through that skill's pool more than
        once: the mixture then trains on repeats, which the reference code avoids by drawing fresh examples every
        round (the H200 LEGO run made ~9 passes over one skill's 1.8k questions in one round; docs/skillit.md)."""
        sizes = list(getattr(dm, "pool_sizes", []) or [])
        if not sizes:
            return
        draws = round_len * int(dm.batch_size) * max(1, trainer.world_size) * max(1, trainer.accumulate_grad_batches)
        names = list(getattr(dm, "skill_names", [f"skill{i + 1}" for i in range(len(sizes))]))
        small = [(n, k) for n, k in zip(names, sizes) if k < draws]
        if small:
            need = int(np.ceil(draws * sum(sizes) / min(sizes)))
            log.warning("Skill-It: a round of %d steps draws up to %d examples; the pools of %s hold fewer (%s), so a "
                        "round weighted on one of them repeats each example %.1f times on average. Raise "
                        "data.n_train to >= %d (generated tasks) or give more records of those skills",
                        round_len, draws, ", ".join(n for n, _ in small), ", ".join(str(k) for _, k in small),
                        draws / min(k for _, k in small), need)

    def update(self, trainer: pl.Trainer, pl_module: pl.LightningModule, dm: Any, step: int) -> None:
        if self.round >= self.rounds or step < self.round_start(self.round + 1, trainer.max_steps):
            return
        window = np.asarray([e["loss"] for e in self.evals[-self.window:]])  # [w, k]
        p = skillit_mixture(self._graph(dm), window, self.eta, target_mask(dm.k, self.target_skills, dm.skill_names))
        p = trainer.strategy.broadcast(p, src=0)  # identical already (all-reduced losses); make it certain
        self.round += 1
        self._set_mixture_everywhere(trainer, dm, p, step)
        log.info("Skill-It round %d at step %d: p = %s", self.round, step, np.round(p, 3).tolist())
