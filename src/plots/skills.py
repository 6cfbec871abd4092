"""Per-skill history plots of a curriculum run (src/callbacks/skills/): accuracy (or reward) and mixture over steps."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from src.plots.save import save_png


def plot_skill_history(evals: list[dict[str, Any]], mixtures: list[dict[str, Any]], names: list[str], out: Path,
                       title: str = "", metric: str = "acc") -> None:
    """skill_accuracy.png (accuracy per skill over steps; `metric="reward"`: skill_reward.png, the mean greedy
    reward of RL prompts) and skill_mixture.png (weights over steps) in `out`.

    evals: `{"step", metric: [k], ...}` per evaluation; mixtures: `{"step", "applies_from_step", "weights": [k]}`
    per change. A mixture is drawn from the step it trains from (`applies_from_step`), not the step it was decided.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [e["step"] for e in evals]
    fig, ax = plt.subplots(figsize=(7, 4))
    for i, n in enumerate(names):
        ax.plot(steps, [e[metric][i] for e in evals], "o-", ms=3, label=n)
    if metric == "reward":
        values = [x for e in evals for x in e[metric]]
        lo, top = min([0.0, *values]), max([1.0, *values])
        ax.set(xlabel="optimizer step", ylabel="mean greedy reward (validation prompts)",
               ylim=(lo, lo + (top - lo) * 1.02), title=title)
    else:
        ax.set(xlabel="optimizer step", ylabel="greedy answer accuracy", ylim=(0, 1.02), title=title)
    ax.grid(alpha=0.3)
    ax.legend()
    save_png(fig, out / ("skill_reward.png" if metric == "reward" else "skill_accuracy.png"))
    if mixtures:
        fig, ax = plt.subplots(figsize=(7, 4))
        xs = [m.get("applies_from_step", m["step"]) for m in mixtures]
        end = max(steps[-1] if steps else 0, xs[-1] + 1)
        xs = [*xs, end]
        for i, n in enumerate(names):
            ys = [m["weights"][i] for m in mixtures]
            ax.step(xs, ys + ys[-1:], where="post", label=n)
        ax.set(xlabel="optimizer step", ylabel="sampling weight", ylim=(0, 1.02), title=title)
        ax.grid(alpha=0.3)
        ax.legend()
        save_png(fig, out / "skill_mixture.png")
