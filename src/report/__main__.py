"""Report on finished runs: a markdown table pooled over seeds, and loss curves.

    python -m src.report outputs/<task>/multiruns/<name> [more run or multirun dirs]
    python -m src.report <dir> --group data.stochastok.p --metrics addition/acc_train_tok val/loss --percent
    python -m src.report <dir> --stage finetune --curves train/reward_mean --smooth 10 \
        --x step train/backprop_tokens train/train_seconds          # an RL stage: reward against its cost

Rows are the values of the overrides that differ between jobs (seed excluded; --group to choose), columns the
metrics.json entries all finished jobs share (wall-clock, throughput and step counts left out; --metrics to
choose), cells `mean ± std (n)`. Jobs without metrics.json are listed as missing. The table goes to stdout and to
report.md; report_<metric>.png plots the per-step metrics (--curves, default train/loss and val/loss): the mean
over seeds per row, banded by ± std (3+ seeds) or min–max (2), against the step or any logged column (--x, one
panel each), optionally smoothed (--smooth k: each job's trailing mean of k points); --stage reads the curves of a
two-stage run's later stage (<job>/<stage>/csv/metrics.csv; its metrics are in the job's metrics.json with a
`<stage>/` prefix). Files go to the first directory given, or --out.
--wandb also logs the table and plots to a W&B run (WANDB_MODE=offline works without a network).
Exit status 2, with one line on stderr, when a path is not a run or multirun dir or a metric or key is unknown.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import tempfile
from pathlib import Path

from src.report import curves
from src.report.collect import ReportError, load_jobs
from src.report.table import Table, aggregate, markdown


def atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it 0600; a report is for everyone who may read the runs
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m src.report", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dirs", type=Path, nargs="+", metavar="DIR", help="run dirs and/or multirun dirs")
    ap.add_argument("--group", nargs="+", metavar="KEY", help="override keys that make a row (default: the swept ones)")
    ap.add_argument("--metrics", nargs="+", metavar="METRIC", help="metrics.json entries to show")
    ap.add_argument("--percent", nargs="*", metavar="METRIC",
                    help="show these metrics ×100 as %% (no names: every metric with 'acc' in its name)")
    ap.add_argument("--curves", nargs="*", metavar="METRIC",
                    help=f"csv/metrics.csv columns to plot (default: {' '.join(curves.DEFAULT_CURVES)} where logged;"
                         " --curves alone: no plots)")
    ap.add_argument("--x", nargs="+", default=[curves.STEP], metavar="COLUMN",
                    help="x axes of the curves: step (default) and/or csv columns, one panel each")
    ap.add_argument("--smooth", type=int, default=1, metavar="K",
                    help="plot each job's trailing mean over K logged points (default 1: as logged)")
    ap.add_argument("--stage", default="", metavar="SUBDIR",
                    help="read the curves from <job>/SUBDIR/csv/metrics.csv (e.g. finetune)")
    ap.add_argument("--out", type=Path, help="where report.md and the PNGs go (default: the first DIR)")
    ap.add_argument("--title", default="", help="title of report.md and the plots")
    ap.add_argument("--wandb", action="store_true", help="also log the table and plots to a W&B run")
    ap.add_argument("--wandb-project", default="tokensmith")
    return ap.parse_args(argv)


def curve_metrics(table: Table, requested: list[str] | None, xs: list[str] | None = None) -> list[str]:
    for x in xs or []:
        if x != curves.STEP and not curves.available(table, x):
            names = curves.curve_names(table)
            raise ReportError(f"--x {x!r}: no finished job logged it in csv/metrics.csv (logged: "
                              + (", ".join(names) or "nothing: no csv/metrics.csv") + ")")
    if requested is None:
        return [m for m in curves.DEFAULT_CURVES if curves.available(table, m)]
    for m in requested:
        if not curves.available(table, m):
            names = curves.curve_names(table)
            raise ReportError(f"curve {m!r}: no finished job logged it in csv/metrics.csv (logged: "
                              + (", ".join(names) or "nothing: no csv/metrics.csv") + ")")
    return list(requested)


def log_wandb(table: Table, images: list[tuple[str, Path]], out: Path, project: str, name: str) -> str:
    """One W&B run (job_type=report): the table with numeric mean/std/n columns, and the plots. Returns its dir."""
    try:
        import wandb
    except ImportError as e:
        raise ReportError("--wandb: the wandb package is not installed") from e
    columns = [*(table.group or ["runs"]), "seeds"]
    for m in table.metrics:
        columns += [f"{m} mean", f"{m} std", f"{m} n"]
    data = []
    for row in table.rows:
        cells: list = [*(row.key or ("all",)), ",".join(row.seeds())]
        for m in table.metrics:
            mean, std, n = table.stats(row, m)
            cells += [None if n == 0 else mean, std, n]
        data.append(cells)
    cache = Path(os.environ.get("TOKENSMITH_CACHE") or Path(__file__).resolve().parents[2] / ".cache")
    for key, sub in (("WANDB_CACHE_DIR", "wandb"), ("WANDB_CONFIG_DIR", "wandb-config"),
                     ("WANDB_DATA_DIR", "wandb-data")):  # as train.py does: W&B's side files in the cache, not $HOME
        if key not in os.environ:
            (cache / sub).mkdir(parents=True, exist_ok=True)
            os.environ[key] = str(cache / sub)
    run = wandb.init(project=project, name=name, job_type="report", dir=str(out),
                     config={"group": table.group, "metrics": table.metrics})
    try:
        run.log({"report/table": wandb.Table(columns=columns, data=data),
                 **{f"report/{metric}": wandb.Image(str(path)) for metric, path in images}})
        return str(Path(run.dir).parent)  # offline: <out>/wandb/offline-run-*, for `wandb sync`
    finally:
        run.finish()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if args.smooth < 1:
            raise ReportError(f"--smooth {args.smooth}: must be >= 1 (1 = no smoothing)")
        jobs = load_jobs(args.dirs, stage=args.stage)
        table = aggregate(jobs, group=args.group, metrics=args.metrics, percent=args.percent)
        plot_metrics = curve_metrics(table, args.curves, args.x)
        out = args.out if args.out is not None else args.dirs[0]
        text = markdown(table)
        images = []
        for metric in plot_metrics:
            path = curves.plot(table, metric, out, title=args.title, xs=tuple(args.x), smooth=args.smooth)
            if path is not None:
                images.append((metric, path))
        command = shlex.join(["python", "-m", "src.report", *(sys.argv[1:] if argv is None else argv)])
        doc = [f"# {args.title or 'Report'}: {', '.join(str(d) for d in args.dirs)}", "", f"`{command}`", "", text]
        doc += [f"![{metric}]({path.name})\n" for metric, path in images]
        atomic_write_text(out / "report.md", "\n".join(doc))
        print(text + f"\nwrote {out / 'report.md'}" + "".join(f", {p.name}" for _, p in images), flush=True)
        if args.wandb:
            where = log_wandb(table, images, out, args.wandb_project, args.title or f"report-{out.name}")
            print(f"W&B: {where}")
    except ReportError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `| head`: the files are written; say nothing more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
