"""Send the PNGs a run writes into its run dir to the loggers that show images (W&B), so the run page holds the
same pictures as the directory: loss_curve.png, skill_accuracy.png / skill_mixture.png, length_eval.png.

Loggers without images (CSV, TensorBoard's scalars) are skipped; a plot that was not written (nothing to draw) is
skipped. Rank 0 only, like the files themselves. `run_title` gives those plots a title that says which run they are.
"""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import yaml


def log_images(trainer: pl.Trainer, images: dict[str, Path]) -> list[str]:
    """`{key: png}` to every logger with `log_image` (W&B's `plots/<key>`); returns the keys sent."""
    present = {key: Path(path) for key, path in images.items() if Path(path).is_file()}
    sent: list[str] = []
    if trainer.global_rank != 0 or not present:
        return sent
    for logger in trainer.loggers:
        log_image = getattr(logger, "log_image", None)
        if not callable(log_image):
            continue
        for key, path in present.items():
            log_image(key=f"plots/{key}", images=[str(path)], step=int(trainer.global_step))
            sent.append(key)
    return sent


def run_title(out: Path) -> str:
    """The run's own overrides (`curriculum=skillit seed=1`) as a plot title: a multirun names its run dirs 0, 1, ...,
    which says nothing on a figure copied elsewhere. A later stage's dir (`<run>/finetune`) has no overrides of its
    own: the run's, with the stage named."""
    stage = not (out / ".hydra").is_dir() and (out.parent / ".hydra").is_dir()
    overrides = (out.parent if stage else out) / ".hydra" / "overrides.yaml"
    try:
        items = [str(o).lstrip("+") for o in (yaml.safe_load(overrides.read_text()) or [])]
    except (OSError, yaml.YAMLError):
        items = []
    shown = [o for o in items if not o.startswith(("hydra.", "callbacks.progress_bar", "paths."))]
    title = " ".join(shown) or (out.parent.name if stage else out.name)
    title += f" ({out.name})" if stage else ""
    return title if len(title) <= 100 else title[:97] + "..."
