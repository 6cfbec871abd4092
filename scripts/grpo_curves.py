"""GRPO vs D³S vs random down-sampling: reward curves and the budget to reach GRPO's final reward.

Reads the GRPO stage (`<job>/finetune/csv/metrics.csv`, `<job>/finetune/metrics.json`) of every job of the given
multirun dirs of `experiment=grpo/arith` swept over `downsample=none,random,d3s` and seeds, and writes
- `grpo_curves.png`: mean train reward (moving average over 10 generation batches, ± std over seeds) against
  optimizer steps, against back-propagated tokens and against training wall-clock;
- `grpo_table.md` (also printed): per mode, the final rewards, held-out accuracy, tokens and seconds, and the
  back-propagated tokens / seconds each mode needed to reach GRPO's final smoothed train reward.

    python scripts/grpo_curves.py outputs/grpo_arith/multiruns/sweep-seed1 ... [--out DIR] [--smooth 10]
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
from pathlib import Path

import yaml

MODES = ("none", "random", "d3s")
LABELS = {"none": "GRPO", "random": "GRPO + random down-sampling", "d3s": "GRPO + D³S"}


def job_dirs(roots: list[Path]) -> list[Path]:
    return sorted(p for r in roots for p in r.iterdir() if (p / ".hydra" / "overrides.yaml").is_file())


def job_mode(job: Path) -> tuple[str, str]:
    over = dict(o.split("=", 1) for o in yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text())
                if "=" in o)
    return over.get("downsample", "none").lstrip("+"), over.get("seed", "?")


def curve(job: Path) -> list[dict[str, float]]:
    """Per generation batch: step, reward, backprop tokens, train seconds (rows of the GRPO stage's CSV)."""
    path = job / "finetune" / "csv" / "metrics.csv"
    if not path.is_file():
        return []
    rows = {}
    with path.open() as f:
        for r in csv.DictReader(f):
            if r.get("train/reward_mean"):
                rows[int(r["step"])] = {"step": int(r["step"]) + 1, "reward": float(r["train/reward_mean"]),
                                        "tokens": float(r["train/backprop_tokens"]),
                                        "seconds": float(r["train/train_seconds"])}
    return [rows[k] for k in sorted(rows)]


def smooth(xs: list[float], k: int) -> list[float]:
    return [statistics.fmean(xs[max(0, i - k + 1): i + 1]) for i in range(len(xs))]


def first_reach(c: list[dict[str, float]], sm: list[float], target: float) -> dict[str, float] | None:
    for row, v in zip(c, sm):
        if v >= target:
            return row
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dirs", nargs="+", type=Path)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--smooth", type=int, default=10)
    args = ap.parse_args()
    out = args.out or args.dirs[0]
    runs: dict[str, list[tuple[str, list[dict[str, float]], dict]]] = {m: [] for m in MODES}
    for job in job_dirs(args.dirs):
        mode, seed = job_mode(job)
        c = curve(job)
        mfile = job / "metrics.json"
        if c and mfile.is_file():
            runs.setdefault(mode, []).append((seed, c, json.loads(mfile.read_text())))
    base = runs.get("none") or []
    if not base:
        raise SystemExit("no finished GRPO (downsample=none) job: nothing to compare against")
    target = statistics.fmean(smooth([r["reward"] for r in c], args.smooth)[-1] for _, c, _ in base)

    def fmt(xs: list[float], digits: int = 3) -> str:
        xs = [x for x in xs if x is not None]
        if not xs:
            return "–"
        sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
        return f"{statistics.fmean(xs):.{digits}f} ± {sd:.{digits}f} ({len(xs)})"

    lines = [f"Target: GRPO's final train reward (moving average over {args.smooth} generation batches, mean over "
             f"seeds) = {target:.3f}.", "",
             "| mode | final train reward | val reward (greedy) | held-out acc: SFT base | after GRPO | "
             "back-prop tokens (total) | train s (total) | reached target | back-prop tokens to target | "
             "train s to target |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for mode in MODES:
        rs = runs.get(mode) or []
        if not rs:
            continue
        finals, vals, base_accs, accs, toks, secs, t_tok, t_sec = [], [], [], [], [], [], [], []
        reached = 0
        for _, c, m in rs:
            sm = smooth([r["reward"] for r in c], args.smooth)
            finals.append(sm[-1])
            vals.append(m.get("finetune/val/reward"))
            accs.append(m.get("finetune/arith/acc"))
            base_accs.append(m.get("arith/acc"))
            toks.append(c[-1]["tokens"])
            secs.append(c[-1]["seconds"])
            hit = first_reach(c, sm, target)
            if hit is not None:
                reached += 1
                t_tok.append(hit["tokens"])
                t_sec.append(hit["seconds"])
        lines.append(f"| {LABELS.get(mode, mode)} | {fmt(finals)} | {fmt(vals)} | {fmt(base_accs)} | {fmt(accs)} | "
                     f"{fmt(toks, 0)} | {fmt(secs, 1)} | {reached}/{len(rs)} | {fmt(t_tok, 0)} | {fmt(t_sec, 1)} |")
    table = "\n".join(lines) + "\n"
    print(table)
    (out / "grpo_table.md").write_text(table)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for mode in MODES:
        rs = runs.get(mode) or []
        if not rs:
            continue
        n = min(len(c) for _, c, _ in rs)
        sms = [smooth([r["reward"] for r in c], args.smooth)[:n] for _, c, _ in rs]
        mean = [statistics.fmean(v[i] for v in sms) for i in range(n)]
        sd = [statistics.pstdev([v[i] for v in sms]) for i in range(n)]
        for ax, key in zip(axes, ("step", "tokens", "seconds")):
            x = [statistics.fmean(c[i][key] for _, c, _ in rs) for i in range(n)]
            ax.plot(x, mean, label=f"{LABELS.get(mode, mode)} ({len(rs)} seeds)")
            ax.fill_between(x, [m - s for m, s in zip(mean, sd)], [m + s for m, s in zip(mean, sd)], alpha=0.2)
    for ax, xl in zip(axes, ("optimizer steps", "back-propagated tokens", "training wall-clock (s)")):
        ax.set_xlabel(xl)
        ax.set_ylabel(f"train reward (moving avg {args.smooth})")
        ax.axhline(target, color="grey", lw=0.8, ls="--")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "grpo_curves.png", dpi=110)
    print(f"wrote {out / 'grpo_curves.png'} and {out / 'grpo_table.md'}")


if __name__ == "__main__":
    main()
