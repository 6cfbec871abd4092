"""`LengthRobustnessEval`: a masked-diffusion model's answers at 1x, 2x, 4x, 8x its training canvas (docs/mdlm.md).

Rainbow Padding's measurement: with <eos> padding, a longer allocated generation length makes the sampler commit
end tokens early and answers collapse; with rainbow padding, length and accuracy should stay flat. For every
multiplier m the held-out problems of the data module (`datamodule.eval_problems()`) are sampled on a canvas of
m·C tokens with steps = m·C, one block, greedy (temperature 0, low-confidence remasking unless the method says
otherwise), and scored:

- `eval/len@<m>x`:       mean answer length in tokens (decoding rule: before the first end token, pads dropped);
- `eval/exact@<m>x`:     exact match of the decoded answer with the target text;
- `eval/early_end@<m>x`: share of end tokens among the tokens committed in the first half of the steps;
- `eval/target_len`:     the targets' mean length in tokens (what `len` should be);
- `eval/valid@<m>x`:     share of allowed answers (only where the data module defines `valid_answer(prompt,
  answer)`, e.g. `data=rainbow_lengths`: 1..max_len tokens, each one of the prompt's digits);
- `eval/eos_given_eos_k<k>@<m>x` (for each k of `end_given_end`): the end token's backwards spread, the mean over
  problems and positions j of the model's p(x_{j-k} = <eos> | x_j = <eos>, every other canvas position masked),
  j over the positions where the data put an end token (2..longest target + 1); `eval/data_eos_given_eos_k<k>` is
  the same conditional frequency in the targets laid out with the run's padding (what a calibrated model gives:
  under <eos> padding P(n < j-k | n < j), under Rainbow padding 0, the end token being unique).

Runs at the end of training (and after every validation with `every_validation: true`); the values go to the
loggers and, through `summary_metrics()`, to metrics.json; `length_eval.png` goes to the run dir.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch

from src.callbacks.log_images import log_images
from src.callbacks.task_eval import _TaskEval
from src.models.components.mdlm_sampler import answer_tokens, early_end_fraction
from src.plots.length import plot_length_robustness

log = logging.getLogger(__name__)


class LengthRobustnessEval(_TaskEval):
    prefix = "eval"

    def __init__(self, canvas: int, multipliers: Sequence[int] = (1, 2, 4, 8), n_eval: int | None = None,
                 batch_size: int = 256, every_validation: bool = False, plot: bool = True,
                 end_given_end: Sequence[int] = ()) -> None:
        super().__init__(every_validation)
        self.canvas, self.multipliers = int(canvas), [int(m) for m in multipliers]
        self.end_given_end = [int(k) for k in end_given_end]
        if any(k < 1 for k in self.end_given_end):
            raise ValueError(f"callbacks.length_eval.end_given_end={self.end_given_end}: each k must be >= 1")
        self.n_eval, self.batch_size, self.plot = n_eval, int(batch_size), bool(plot)
        self._problems: list[tuple[str, str]] = []
        self._valid: Any = None
        self._padding = "rainbow"
        self._out: Path | None = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        dm = trainer.datamodule
        if dm is None or not callable(getattr(dm, "eval_problems", None)):
            raise ValueError("callbacks.length_eval needs a data module with eval_problems() (data=rainbow_copy); "
                             "remove the callback for other data")
        if not callable(getattr(pl_module, "diffuse", None)):
            raise ValueError("callbacks.length_eval needs a masked-diffusion objective (method=mdlm)")
        self._problems = list(dm.eval_problems(self.n_eval))
        self._valid = getattr(dm, "valid_answer", None)
        self._padding = str(getattr(dm, "padding", "rainbow"))
        self._out = Path(trainer.default_root_dir)

    def evaluate(self, module: pl.LightningModule, tok: Any) -> dict[str, float]:
        prompts = [tok.encode(p) for p, _ in self._problems]
        targets = [a for _, a in self._problems]
        pads = tok.reserved_pad_ids
        res: dict[str, float] = {"target_len": sum(len(tok.encode(a)) for a in targets) / max(len(targets), 1)}
        for m in self.multipliers:
            g = m * self.canvas
            lens: list[int] = []
            right = valid = 0
            early_num = early_den = 0.0
            for s in range(0, len(prompts), self.batch_size):
                out = module.diffuse(prompts[s : s + self.batch_size], g, steps=g, block_length=g)
                first = (out.commit_step >= 0) & (out.commit_step < out.steps / 2)
                early_num += early_end_fraction(out, tok.eos_id) * float(first.sum())
                early_den += float(first.sum())
                for canvas, (prompt, want) in zip(out.canvas.tolist(), self._problems[s : s + self.batch_size]):
                    ans = answer_tokens(canvas, tok.eos_id, pads)
                    lens.append(len(ans))
                    text = tok.decode(ans)
                    right += text == want
                    valid += bool(self._valid(prompt, text)) if self._valid is not None else 0
            res[f"len@{m}x"] = sum(lens) / max(len(lens), 1)
            res[f"exact@{m}x"] = right / max(len(lens), 1)
            res[f"early_end@{m}x"] = early_num / early_den if early_den else 0.0
            if self._valid is not None:
                res[f"valid@{m}x"] = valid / max(len(lens), 1)
            if self.end_given_end:
                res.update(self._end_spread(module, tok, prompts, targets, g, m))
        return res

    def _end_spread(self, module: pl.LightningModule, tok: Any, prompts: list[list[int]], targets: list[str],
                    g: int, m: int) -> dict[str, float]:
        """The model's p(x_{j-k} = eos | x_j = eos) and the targets' own frequency (module docstring)."""
        lengths = [len(tok.encode(a)) for a in targets]
        eos_rule = self._padding == "eos"  # eos: x_i = eos iff len < i (1-based); rainbow: iff len == i - 1

        def is_end(n: int, i: int) -> bool:
            return n < i if eos_rule else n == i - 1

        js = [j for j in range(2, min(max(lengths) + 1, g) + 1) if any(is_end(n, j) for n in lengths)]
        probs: dict[int, Any] = {}  # j -> [B, G] model p(eos) with x_j = eos
        for j in js:
            rows = []
            for s in range(0, len(prompts), self.batch_size):
                chunk = prompts[s : s + self.batch_size]
                canvases = torch.full((len(chunk), g), module.mask_id, dtype=torch.long)  # [B, G]
                canvases[:, j - 1] = tok.eos_id
                rows.append(module.token_probs(chunk, canvases, tok.eos_id).cpu())
            probs[j] = torch.cat(rows)  # [N, G]
        res: dict[str, float] = {}
        for k in self.end_given_end:
            model_vals, data_vals = [], []
            for j in js:
                if j - k < 1:
                    continue
                model_vals.append(float(probs[j][:, j - k - 1].mean()))
                cond = [n for n in lengths if is_end(n, j)]
                data_vals.append(sum(is_end(n, j - k) for n in cond) / len(cond))
            res[f"eos_given_eos_k{k}@{m}x"] = sum(model_vals) / max(len(model_vals), 1)
            res[f"data_eos_given_eos_k{k}"] = sum(data_vals) / max(len(data_vals), 1)
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
