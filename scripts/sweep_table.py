"""Summarise a Hydra multirun: one row per value of the swept keys (seeds pooled), mean ± std of chosen metrics.

    python scripts/sweep_table.py outputs/stochastok_addition/multiruns/<name> \
        --group data.stochastok.p --metrics addition/acc_train_tok addition/acc_char_tok val/loss

Also reads a `scripts/budget_sweep.py` directory. Reads each job's `.hydra/overrides.yaml` and `metrics.json`;
jobs without metrics.json (crashed, still running) are listed and left out, never counted as zeros.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict
from pathlib import Path

import yaml


def load_jobs(sweep_dir: Path) -> tuple[list[tuple[dict[str, str], dict]], list[Path]]:
    jobs, missing = [], []
    # Hydra multirun jobs are named 0, 1, ...; scripts/budget_sweep.py names them after the swept values.
    dirs = [p for p in sweep_dir.iterdir() if (p / ".hydra" / "overrides.yaml").is_file()]
    for job in sorted(dirs, key=lambda p: (not p.name.isdigit(), int(p.name) if p.name.isdigit() else 0, p.name)):
        overrides = yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text()) or []
        kv = dict(o.split("=", 1) for o in overrides if "=" in o)
        metrics_file = job / "metrics.json"
        if not metrics_file.is_file():
            missing.append(job)
            continue
        jobs.append((kv, json.loads(metrics_file.read_text())))
    return jobs, missing


def fmt(values: list[float], scale: float) -> str:
    if not values:
        return "n/a"
    mean = statistics.fmean(values) * scale
    std = statistics.stdev(values) * scale if len(values) > 1 else 0.0
    return f"{mean:.3g} ± {std:.2g}" if scale == 1 else f"{mean:.1f} ± {std:.1f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("sweep_dir", type=Path)
    ap.add_argument("--group", nargs="+", required=True, help="override keys that define a row")
    ap.add_argument("--metrics", nargs="+", required=True)
    ap.add_argument("--percent", nargs="*", default=[], help="metrics to show as percentages")
    args = ap.parse_args()
    jobs, missing = load_jobs(args.sweep_dir)
    rows: dict[tuple[str, ...], dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    seeds: dict[tuple[str, ...], list[str]] = defaultdict(list)
    for kv, metrics in jobs:
        key = tuple(kv.get(g, "(default)") for g in args.group)
        seeds[key].append(kv.get("seed", "?"))
        for m in args.metrics:
            if metrics.get(m) is not None:
                rows[key][m].append(float(metrics[m]))
    print("| " + " | ".join(args.group) + " | seeds | " + " | ".join(args.metrics) + " |")
    print("|" + "---|" * (len(args.group) + 1 + len(args.metrics)))
    for key in sorted(rows):
        cells = [fmt(rows[key][m], 100.0 if m in args.percent else 1.0) for m in args.metrics]
        print("| " + " | ".join(key) + f" | {','.join(seeds[key])} | " + " | ".join(cells) + " |")
    for job in missing:
        print(f"\n(no metrics.json in {job}: left out)")


if __name__ == "__main__":
    main()
