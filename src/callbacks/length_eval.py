"""`LengthRobustnessEval`: a masked-diffusion model's answers at 1x, 2x, 4x, 8x its training canvas (docs/mdlm.md).

Rainbow Padding's measurement: with <eos> padding, a longer allocated generation length makes the sampler commit
end tokens early and answers collapse; with rainbow padding, length and accuracy should stay flat. For every
multiplier m the held-out problems of the data module (`datamodule.eval_problems()`) are sampled on a canvas of
m·C tokens with steps = m·C, one block, greedy (temperature 0, low-confidence remasking unless the method says
otherwise), and scored:

- `eval/len@<m>x`:       mean answer length in tokens (decoding rule: before the first end token, pads dropped);
- `eval/exact@<m>x`:     exact match of the decoded answer with the target text;
- `eval/early_end@<m>x`: share of end tokens among the tokens committed in the first half of the steps;
- `eval/target_len`:     the targets' mean length in tokens (what `len` should be).

Runs at the end of training (and after every validation with `every_validation: true`); the values go to the
loggers and, through `summary_metrics()`, to metrics.json; `length_eval.png` goes to the run dir.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl

from src.callbacks.log_images import log_images
from src.callbacks.task_eval import _TaskEval
from src.models.components.mdlm_sampler import answer_tokens, early_end_fraction
from src.plots.length import plot_length_robustness

log = logging.getLogger(__name__)


class LengthRobustnessEval(_TaskEval):
    prefix = "eval"

    def __init__(self, canvas: int, multipliers: Sequence[int] = (1, 2, 4, 8), n_eval: int | None = None,
                 batch_size: int = 256, every_validation: bool = False, plot: bool = True) -> None:
        super().__init__(every_validation)
        self.canvas, self.multipliers = int(canvas), [int(m) for m in multipliers]
        self.n_eval, self.batch_size, self.plot = n_eval, int(batch_size), bool(plot)
        self._problems: list[tuple[str, str]] = []
        self._out: Path | None = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        dm = trainer.datamodule
        if dm is None or not callable(getattr(dm, "eval_problems", None)):
            raise ValueError("callbacks.length_eval needs a data module with eval_problems() (data=rainbow_copy); "
                             "remove the callback for other data")
        if not callable(getattr(pl_module, "diffuse", None)):
            raise ValueError("callbacks.length_eval needs a masked-diffusion objective (method=mdlm)")
        self._problems = list(dm.eval_problems(self.n_eval))
        self._out = Path(trainer.default_root_dir)

    def evaluate(self, module: pl.LightningModule, tok: Any) -> dict[str, float]:
        prompts = [tok.encode(p) for p, _ in self._problems]
        targets = [a for _, a in self._problems]
        pads = tok.reserved_pad_ids
        res: dict[str, float] = {"target_len": sum(len(tok.encode(a)) for a in targets) / max(len(targets), 1)}
        for m in self.multipliers:
            g = m * self.canvas
            lens: list[int] = []
            right = 0
            early_num = early_den = 0.0
            for s in range(0, len(prompts), self.batch_size):
                out = module.diffuse(prompts[s : s + self.batch_size], g, steps=g, block_length=g)
                first = (out.commit_step >= 0) & (out.commit_step < out.steps / 2)
                early_num += early_end_fraction(out, tok.eos_id) * float(first.sum())
                early_den += float(first.sum())
                for canvas, want in zip(out.canvas.tolist(), targets[s : s + self.batch_size]):
                    ans = answer_tokens(canvas, tok.eos_id, pads)
                    lens.append(len(ans))
                    right += tok.decode(ans) == want
            res[f"len@{m}x"] = sum(lens) / max(len(lens), 1)
            res[f"exact@{m}x"] = right / max(len(lens), 1)
            res[f"early_end@{m}x"] = early_num / early_den if early_den else 0.0
        return res

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_end(trainer, pl_module)
        if self.plot and self.results and trainer.global_rank == 0 and self._out is not None:
            r, ms = self.results, self.multipliers
            plot_length_robustness([m * self.canvas for m in ms], [r[f"eval/len@{m}x"] for m in ms],
                                   [r[f"eval/exact@{m}x"] for m in ms], [r[f"eval/early_end@{m}x"] for m in ms],
                                   r["eval/target_len"], self._out / "length_eval.png",
                                   title=f"canvas C = {self.canvas} ({type(pl_module).__name__})")
            log_images(trainer, {"length_eval": self._out / "length_eval.png"})
