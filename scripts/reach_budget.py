"""The budget each arm of an RL study needs to reach the full run's final held-out accuracy, per seed.

For each arm and seed: the back-propagated tokens logged at the arm's first evaluation at or above the reference
arm's final metric of the same seed, as a share of the reference's total tokens, with the generation batch of
that evaluation and the train minutes to it ("never" if it does not get there). It reads the study's run dirs
(`<out>/<arm>/seed_<s>/`, the stage's csv/metrics.csv on one x-axis: `src.report.collect.on_logger_axis`).

    python scripts/reach_budget.py outputs/reproduce/d3s_arith --arms grpo random d3s d3s_intra

Prints a markdown table (docs/results.md, "GRPO vs D³S at a baseline that learns: results").
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from src.report.collect import Job  # noqa: E402
from src.reproduce.rules import first_reach  # noqa: E402


def reach(out: Path, arm: str, ref: str, seed: int, stage: str, metric: str, tokens: str, seconds: str) -> str:
    """One cell: '<share> (batch <b>, <m> min)', 'never', or '—' when either job has not finished."""
    jobs = []
    for name in (ref, arm):
        job = Job.read(out / name / f"seed_{seed}")
        job.stage = stage
        jobs.append(job)
    full, mine = jobs
    key = f"{stage}/{metric}" if stage else metric
    if not full.metrics or not mine.metrics or key not in full.metrics or key not in mine.metrics:
        return "—"
    target = full.metrics[key]
    total = full.metrics[f"{stage}/{tokens}" if stage else tokens]
    curves = mine.curves()
    got = first_reach(curves.get(tokens, []), curves.get(metric, []), target)
    if got is None:
        return "never"
    secs = first_reach(curves.get(seconds, []), curves.get(metric, []), target)
    batch = min(s for s, a in curves[metric] if a >= target - 1e-12) + 1
    minutes = f", {secs / 60:.0f} min" if secs is not None else ""
    return f"{got / total:.0%} (batch {batch}{minutes})"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path, help="the study's directory (outputs/reproduce/<study>)")
    ap.add_argument("--arms", nargs="+", required=True, help="arms to tabulate; the first is the reference")
    ap.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    ap.add_argument("--stage", default="finetune", help="the RL stage's sub-directory ('' for a one-stage run)")
    ap.add_argument("--metric", default="arith/acc")
    ap.add_argument("--tokens", default="train/backprop_tokens")
    ap.add_argument("--seconds", default="train/train_seconds")
    a = ap.parse_args(argv)
    if not a.out.is_dir():
        print(f"error: {a.out} is not a study directory", file=sys.stderr)
        return 2
    ref = a.arms[0]
    print("| mode | " + " | ".join(f"seed {s}" for s in a.seeds) + " |")
    print("|---|" + "---|" * len(a.seeds))
    for arm in a.arms:
        cells = [reach(a.out, arm, ref, s, a.stage, a.metric, a.tokens, a.seconds) for s in a.seeds]
        print(f"| {arm} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
