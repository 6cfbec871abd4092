"""Aggregate a Skill-It multirun into a markdown table and plots (docs/results.md, docs/img/skillit_*.png).

    python scripts/skillit_results.py outputs/skillit_lego/multiruns/<name> --img docs/img --prefix skillit_lego

Reads each job's config_resolved.yaml (curriculum, seed) and skills.json (per-skill evals, mixtures); prints the
table (mean ± std over seeds of per-skill accuracy at half and at the end) and writes the plots.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import yaml


def load(multirun: Path) -> dict[str, list[dict]]:
    runs: dict[str, list[dict]] = defaultdict(list)
    for job in sorted(p for p in multirun.iterdir() if (p / "skills.json").is_file()):
        cfg = yaml.safe_load((job / "config_resolved.yaml").read_text())
        data = json.loads((job / "skills.json").read_text())
        runs[cfg["curriculum"]["name"]].append({"seed": cfg["seed"], "dir": job.name, **data})
    return runs


def at_step(evals: list[dict], step: int) -> dict:
    return min(evals, key=lambda e: abs(e["step"] - step))


def table(runs: dict[str, list[dict]]) -> str:
    names = next(iter(runs.values()))[0]["skills"]
    last = max(r["evals"][-1]["step"] for rs in runs.values() for r in rs)
    head = "| curriculum | seeds | " + " | ".join(names) + f" | mean (end) | mean (half, step {last // 2}) |"
    lines = [head, "|" + "---|" * (len(names) + 4)]
    for cur, rs in runs.items():
        end = np.array([at_step(r["evals"], last)["acc"] for r in rs]) * 100  # [seeds, k]
        half = np.array([at_step(r["evals"], last // 2)["acc"] for r in rs]) * 100
        cells = [f"{m:.1f} ± {s:.1f}" for m, s in zip(end.mean(0), end.std(0))]
        lines.append(f"| {cur} | {len(rs)} | " + " | ".join(cells)
                     + f" | **{end.mean(1).mean():.1f}** ± {end.mean(1).std():.1f}"
                     + f" | {half.mean(1).mean():.1f} ± {half.mean(1).std():.1f} |")
    return "\n".join(lines) + f"\n\nGreedy answer accuracy (%) at step {last}, mean ± std over seeds."


def plots(runs: dict[str, list[dict]], img: Path, prefix: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    img.mkdir(parents=True, exist_ok=True)
    names = next(iter(runs.values()))[0]["skills"]
    fig, axes = plt.subplots(1, len(runs), figsize=(4.2 * len(runs), 3.6), sharey=True, squeeze=False)
    for ax, (cur, rs) in zip(axes[0], runs.items()):
        steps = [e["step"] for e in rs[0]["evals"]]
        acc = np.array([[e["acc"] for e in r["evals"]] for r in rs if len(r["evals"]) == len(steps)])  # [S, E, k]
        for i, n in enumerate(names):
            ax.plot(steps, acc[:, :, i].mean(0), "o-", ms=2, label=n)
        ax.set(title=f"{cur} (mean of {len(acc)} seeds)", xlabel="optimizer step", ylim=(0, 1.02))
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("greedy answer accuracy")
    axes[0][-1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(img / f"{prefix}_accuracy.png", dpi=100)
    plt.close(fig)
    mixing = {c: rs for c, rs in runs.items() if len(rs[0]["mixtures"]) > 1} or runs
    fig, axes = plt.subplots(1, len(mixing), figsize=(4.2 * len(mixing), 3.4), squeeze=False)
    for ax, (cur, rs) in zip(axes[0], mixing.items()):
        r = rs[0]
        end = r["evals"][-1]["step"]
        xs = [m.get("applies_from_step", m["step"]) for m in r["mixtures"]] + [end]
        for i, n in enumerate(names):
            ys = [m["weights"][i] for m in r["mixtures"]]
            ax.step(xs, ys + ys[-1:], where="post", label=n)
        ax.set(title=f"{cur} mixture (seed {r['seed']})", xlabel="optimizer step", ylabel="weight", ylim=(0, 1.02))
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(img / f"{prefix}_mixture.png", dpi=100)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("multirun", type=Path)
    ap.add_argument("--img", type=Path, default=Path("docs/img"))
    ap.add_argument("--prefix", default="skillit_lego")
    args = ap.parse_args()
    runs = load(args.multirun)
    if not runs:
        raise SystemExit(f"no finished jobs (skills.json) under {args.multirun}")
    print(table(runs))
    plots(runs, args.img, args.prefix)


if __name__ == "__main__":
    main()
