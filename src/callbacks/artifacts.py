"""What a user opens after a run: metrics.json, loss_curve.png and samples.txt in the run directory.

The loss history is kept in this callback's state (saved in checkpoints), so a resumed run still plots and
summarises the whole run, not only its second half. Only global rank 0 writes files.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback

from src.callbacks.log_images import log_images, run_title
from src.data.cache import atomic_write_text
from src.models.objective import StepOutput


class RunArtifacts(Callback):
    def __init__(self, sample_max_new_tokens: int = 48, sample_temperature: float = 0.0) -> None:
        self.sample_max_new_tokens = sample_max_new_tokens
        self.sample_temperature = sample_temperature
        self.train_history: list[tuple[int, float]] = []  # (step, loss)
        self.val_history: list[tuple[int, float]] = []
        self.val_metrics: dict[str, float] = {}  # the last validation's val/* metrics but loss and ppl
        self.throughput: list[float] = []
        self._start = 0.0
        self._elapsed_before = 0.0
        self._seen_step = 0
        self._micro: list[float] = []  # this optimizer step's micro-batch losses
        self._worked = False  # did this fit train or validate at all?
        self._finished_before = False  # metrics.json of an earlier launch that reached max_steps (on_fit_start)
        self._trained = False  # did this fit run a training step?

    # ---- state travels with checkpoints ----------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "train_history": self.train_history,
            "val_history": self.val_history,
            "val_metrics": self.val_metrics,
            "throughput": self.throughput,
            "elapsed": self._elapsed_before + (time.perf_counter() - self._start if self._start else 0.0),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.train_history = [tuple(x) for x in state_dict["train_history"]]
        self.val_history = [tuple(x) for x in state_dict["val_history"]]
        self.val_metrics = dict(state_dict.get("val_metrics", {}))
        self.throughput = list(state_dict.get("throughput", []))
        self._elapsed_before = float(state_dict.get("elapsed", 0.0))

    # ---- recording -----------------------------------------------------------------------------------
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start = time.perf_counter()
        self._worked = self._trained = False
        # a metrics.json from an earlier launch that reached max_steps: that run finished, final validation included
        # (metrics.json is written after it); read now, before this fit's own on_fit_end may write one
        written = Path(trainer.default_root_dir) / "metrics.json"
        self._finished_before = bool(trainer.max_steps) and written.is_file() and \
            json.loads(written.read_text()).get("steps", -1) >= trainer.max_steps

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._seen_step = trainer.global_step  # a resumed run continues after its restored history
        self._micro = []

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any,
                           batch: Any, batch_idx: int) -> None:
        out = StepOutput.of(outputs)
        if out is None:
            return  # a skipped step, or a module not built on src/models/objective.py
        # The step's loss is Σ numerator / Σ denominator over its micro-batches and ranks (for the causal LM: the
        # exact token mean), whatever the batch split and the module's loss normalisation (the returned `loss` is
        # scaled for the backward).
        self._worked = self._trained = True
        self._micro.append((float(out.numerator), float(out.denominator)))
        if trainer.global_step == self._seen_step:
            return  # still inside an accumulation window
        sums = torch.tensor([sum(x for x, _ in self._micro), sum(n for _, n in self._micro)],
                            dtype=torch.float64, device=pl_module.device)  # [2]
        if trainer.world_size > 1:
            sums = trainer.strategy.reduce(sums, reduce_op="sum")
        step_loss = float(sums[0] / sums[1].clamp(min=1))
        self.train_history.append((trainer.global_step, step_loss))
        self._seen_step, self._micro = trainer.global_step, []
        rate = trainer.callback_metrics.get("train/tokens_per_s")
        if rate is not None:
            self.throughput.append(float(rate))

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        val = trainer.callback_metrics.get("val/loss")
        if val is not None and not trainer.sanity_checking:
            self._worked = True
            self.val_history.append((trainer.global_step, float(val)))
            # the objective's own held-out metrics beside its loss (DPO's val/rewards/accuracy, margins, ...)
            self.val_metrics = {k: float(v) for k, v in trainer.callback_metrics.items()
                                if k.startswith("val/") and k not in ("val/loss", "val/ppl") and v.numel() == 1}

    def final_validation_missing(self, trainer: pl.Trainer) -> bool:
        """True for a run resumed at its last step whose validation there never finished (killed during the final
        validation, after the final checkpoint): nothing trained in this fit, a validation was due at this step
        and the newest recorded one is older. The runtime then validates once more (src/runtime/build.py)."""
        if self._trained or not trainer.max_steps or trainer.global_step < trainer.max_steps:
            return False
        if self._finished_before:
            # the run had finished: a resume of it (a two-stage run going on to stage 2) validates nothing again and
            # keeps the run's numbers, including task metrics that are computed only at the end of training
            return False
        if not trainer.limit_val_batches or (self.val_history and self.val_history[-1][0] >= trainer.global_step):
            return False
        every = trainer.val_check_batch
        if not isinstance(every, int):
            return True  # a fraction of an epoch: Lightning validates at the end of training
        return trainer.global_step * trainer.accumulate_grad_batches % every == 0

    # ---- writing -------------------------------------------------------------------------------------
    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        out = Path(trainer.default_root_dir)
        if not self._worked and (out / "metrics.json").is_file():
            # A finished run resumed again (a requeued job, `ckpt_path=last` at max_steps, a two-stage run going on
            # to its second stage): nothing happened, and the checkpoint predates the last validation, so a
            # rewrite would replace the run's final numbers with older ones. Keep what the run wrote.
            return
        self.write(trainer, pl_module)

    def write(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """metrics.json, samples.txt and loss_curve.png from what was recorded (and restored)."""
        out = Path(trainer.default_root_dir)
        samples = self._samples(trainer, pl_module)  # every rank runs the model (sharded strategies need it)
        if trainer.global_rank != 0:
            return
        metrics = self.summary(trainer)
        for cb in trainer.callbacks:  # e.g. per-skill accuracy from src/callbacks/skills/
            if cb is not self and callable(getattr(cb, "summary_metrics", None)):
                metrics.update(cb.summary_metrics())
        atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2) + "\n")
        if samples:
            atomic_write_text(out / "samples.txt", "".join(f"### {p!r}\n{c}\n\n" for p, c in samples))
        self._plot(out / "loss_curve.png")
        log_images(trainer, {"loss_curve": out / "loss_curve.png"})

    def summary(self, trainer: pl.Trainer) -> dict[str, Any]:
        tail = [loss for _, loss in self.train_history[-10:]]
        val = self.val_history[-1][1] if self.val_history else None
        rates = sorted(self.throughput[len(self.throughput) // 10:]) or [float("nan")]  # drop warm-up
        return {
            "steps": trainer.global_step,
            "train/loss_first": self.train_history[0][1] if self.train_history else None,
            # the mean of the last 10 logged losses (one logged loss is noisy), and the last one as logged
            "train/loss_last10": sum(tail) / len(tail) if tail else None,
            "train/loss_last": tail[-1] if tail else None,
            "val/loss": val,
            # exp(loss) is a perplexity only for token-level NLL objectives (not DPO's or GRPO's loss)
            "val/ppl": (math.exp(min(val, 30.0)) if val is not None
                        and getattr(trainer.lightning_module, "reports_perplexity", True) else None),
            **self.val_metrics,
            "train/tokens_per_s_median": rates[len(rates) // 2],
            "wall_time_s": round(self._elapsed_before + time.perf_counter() - self._start, 2),
            "run_dir": str(trainer.default_root_dir),
        }

    def _samples(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> list[tuple[str, str]]:
        """(prompt, continuation) pairs from the objective's own `sample` (autoregressive, diffusion, ...); none when
        the module cannot sample or the data offers no prompts."""
        dm = trainer.datamodule
        sample = getattr(pl_module, "sample", None)
        if self.sample_max_new_tokens <= 0 or sample is None or dm is None or not hasattr(dm, "sample_prompts"):
            return []
        prompts = list(dm.sample_prompts())
        if not prompts:
            return []
        was_training = pl_module.training
        pl_module.eval()
        try:
            with torch.no_grad():
                texts = sample(prompts, max_new_tokens=self.sample_max_new_tokens,
                               temperature=self.sample_temperature)
        finally:
            pl_module.train(was_training)
        return list(zip(prompts, texts)) if texts is not None else []

    def _plot(self, path: Path) -> None:
        if not self.train_history:
            return
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 4))
        steps, losses = zip(*self.train_history)
        ax.plot(steps, losses, lw=1, alpha=0.8, label="train")
        if self.val_history:
            vs, vl = zip(*self.val_history)
            ax.plot(vs, vl, "o-", label="validation")
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("loss")  # nats/token for an LM; a preference or policy loss for DPO / GRPO
        if min(losses + (tuple(vl) if self.val_history else ())) > 0:  # a GRPO loss goes below 0: linear then
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend()
        ax.set_title(run_title(path.parent), fontsize=9)
        fig.tight_layout()
        tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}.png")
        fig.savefig(tmp, dpi=110)
        plt.close(fig)
        os.replace(tmp, path)
