"""How many steps fit a time budget, from a probe sweep whose jobs were all stopped by `budget_sweep.py`.

    python scripts/offline_gpu/fit_steps.py PROBE_DIR SECONDS [--multiple 120] [--max 6000]

Prints the largest multiple of `--multiple` (at most `--max`) that the *slowest* probe job would reach in SECONDS
of training at its measured pace. The probe must run the same jobs side by side as the real sweep, since on one
GPU they share it. Why a multiple: Skill-It's rounds are `max_steps / rounds` long and should hold a whole number
of evaluations (LEGO: 120 evaluations, every steps/120, in 6 rounds -> 120).
Exit status 1, with the reason, when no probe job has a pace or not even one multiple fits.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

_spec = importlib.util.spec_from_file_location("budget_sweep", Path(__file__).resolve().parents[1] / "budget_sweep.py")
budget_sweep = importlib.util.module_from_spec(_spec)
sys.modules["budget_sweep"] = budget_sweep
_spec.loader.exec_module(budget_sweep)


def fit_steps(paces: list[float], seconds: float, multiple: int, most: int) -> int:
    """Largest multiple of `multiple`, at most `most`, that the slowest pace reaches in `seconds`; 0 if none."""
    if not paces:
        return 0
    return min(most, int(min(paces) * seconds) // multiple * multiple)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("probe_dir", type=Path)
    ap.add_argument("seconds", type=float)
    ap.add_argument("--multiple", type=int, default=120)
    ap.add_argument("--max", type=int, default=6000)
    args = ap.parse_args()
    runs = sorted(p for p in args.probe_dir.iterdir() if (p / "preemptions.json").is_file())
    paces = [r for r in (budget_sweep.pace(p) for p in runs) if r is not None and r > 0]
    if not paces:
        print(f"error: no stopped job with a pace in {args.probe_dir}", file=sys.stderr)
        return 1
    steps = fit_steps(paces, args.seconds, args.multiple, args.max)
    print(f"{len(paces)} probe jobs, slowest {min(paces):.2f} steps/s, fastest {max(paces):.2f}: "
          f"{steps} steps fit {args.seconds:.0f} s", file=sys.stderr)
    if steps == 0:
        print(f"error: not even {args.multiple} steps fit {args.seconds:.0f} s at {min(paces):.2f} steps/s",
              file=sys.stderr)
        return 1
    print(steps)
    return 0


if __name__ == "__main__":
    sys.exit(main())
