"""Length-robustness plot of a masked-diffusion run: response length and exact match against generation length."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from src.plots.save import save_png


def plot_length_robustness(gen_lengths: Sequence[int], lengths: Sequence[float], exact: Sequence[float],
                           early_end: Sequence[float], target_len: float, out: Path, title: str = "") -> None:
    """One PNG, three panels over the allocated generation length (log2 axis): mean response length (with the
    targets' mean length as a dashed line), exact-match accuracy, and the share of end tokens among the tokens
    committed in the first half of the sampler's steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6))
    panels = (("response length (tokens)", lengths, None), ("exact match", exact, (0, 1.02)),
              ("end tokens in first half of steps", early_end, (0, 1.02)))
    for ax, (label, ys, ylim) in zip(axes, panels):
        ax.plot(list(gen_lengths), list(ys), "o-")
        ax.set_xscale("log", base=2)
        ax.set(xlabel="generation length (canvas tokens)", ylabel=label)
        if ylim:
            ax.set_ylim(*ylim)
        ax.grid(alpha=0.3)
    axes[0].axhline(target_len, ls="--", c="gray", label="target mean")
    axes[0].legend()
    fig.suptitle(title)
    save_png(fig, Path(out))
