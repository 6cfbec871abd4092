"""Run a pre-registered study end to end, or judge its finished jobs (docs/results.md).

    python -m src.reproduce rainbow_lengths                       # train what is missing, then print the verdict
    python -m src.reproduce rainbow_lengths seeds=[4,5,6]         # other seeds, same rule
    python -m src.reproduce rainbow_lengths --judge               # only judge what has finished
    python -m src.reproduce rainbow_lengths --dry-run             # print the train.py commands
    python -m src.reproduce rainbow_lengths trainer.max_steps=50 --out /tmp/try   # overrides for every job
    python -m src.reproduce --list

Jobs go to `<out>/<arm>/seed_<s>/` (default out: outputs/reproduce/<study>); a job that finished is never rerun, an
interrupted one continues from its checkpoint. The report (per-seed table, paired differences, verdict) is
printed and written to `<out>/verdict.md`, with the study's plot as `<out>/<study>.png`. Exit status: 0 when the
report was made (whatever the verdict), 1 when a job failed, 2 on a bad study or command line (one line).
"""

from __future__ import annotations

import argparse
import os
import sys
from datetime import date
from pathlib import Path

from src.report.__main__ import atomic_write_text
from src.report.collect import ReportError
from src.reproduce.judge import collect, curve_plot, load_curves, pairs_table, seed_table, verdict
from src.reproduce.launch import ROOT, check_record, plan, run_launches
from src.reproduce.study import Study, StudyError, available, load_study, parse_seeds


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m src.reproduce", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("study", nargs="?", help="a study name (src/reproduce/studies/) or a study yaml path")
    ap.add_argument("overrides", nargs="*", help="seeds=[1,2,3] and train.py overrides for every job")
    ap.add_argument("--out", type=Path, help="the study's directory (default: outputs/reproduce/<study>)")
    ap.add_argument("--arms", nargs="+", help="train only these arms (the report shows every arm)")
    ap.add_argument("--judge", action="store_true", help="train nothing; judge the finished jobs")
    ap.add_argument("--dry-run", action="store_true", help="print the train.py commands and exit")
    ap.add_argument("--list", action="store_true", help="list the studies")
    return ap.parse_args(argv)


def report(study: Study, out: Path, seeds: list[int]) -> tuple[str, str]:
    values, missing = collect(study, out, seeds)
    word, lines = verdict(study, values, seeds, missing, load_curves(study, out, seeds) if study.curves else None)
    shown = study.path.relative_to(ROOT) if study.path.is_relative_to(ROOT) else study.path
    parts = [f"# {study.name}: {word}", "", f"Study file: `{shown}`; "
             f"seeds {seeds}; jobs in `{out}`; judged {date.today().isoformat()}.", "",
             "## Per seed", "", seed_table(study, values, seeds)]
    pt = pairs_table(study, values, seeds)
    if pt:
        parts += ["", "## Paired differences (a − b, per seed)", "", pt]
    parts += ["", f"## Verdict: {word}", "", lines]
    if missing:
        parts += ["", "Missing jobs (not counted): " + "; ".join(missing)]
    png = curve_plot(study, values, seeds, out / f"{study.name}.png")
    if png:
        parts += ["", f"Plot: `{png}`"]
    return word, "\n".join(parts) + "\n"


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    if a.list or not a.study:
        print("studies: " + ", ".join(available()))
        return 0 if a.list else 2
    study = load_study(a.study)
    seeds = study.seeds
    extra = []
    for ov in a.overrides:
        if ov.startswith("seeds="):
            seeds = parse_seeds(ov.split("=", 1)[1])
        elif "=" in ov or ov.startswith("~"):
            extra.append(ov)
        else:
            raise StudyError(f"{ov!r} is neither seeds=[...] nor a train.py override (key=value)")
    logs = Path(os.environ.get("TOKENSMITH_OUTPUTS", ROOT / "outputs"))
    out = (a.out or logs / "reproduce" / study.name).resolve()
    for name in a.arms or []:
        study.arm(name)
    failed: list[str] = []
    if not a.judge:
        launches = plan(study, out, seeds, extra, a.arms)
        if a.dry_run:
            import shlex

            for launch in launches:
                print(shlex.join(launch.argv))
            return 0
        check_record(study, out, extra)
        failed = run_launches(launches, out)
    word, text = report(study, out, seeds)
    atomic_write_text(out / "verdict.md", text)
    print(text)
    if failed:
        print("failed launches: " + "; ".join(failed), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (StudyError, ReportError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
