"""Pooling jobs into rows (one per value of the swept overrides, seeds pooled) and the markdown table.

Rows: the distinct values of the overrides that differ between jobs, `seed` excluded (or the keys given). Columns:
metrics.json entries; by default every numeric one that all finished jobs share, minus noise (wall-clock,
throughput, step counts, the run dir). Cells: `mean ± std (n)` with the sample std (n-1) over the row's finished
jobs; a job without metrics.json is listed as missing and counts in no cell.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field

from src.report.collect import Job, ReportError

DEFAULT = "(default)"  # a row's value for a key its jobs do not override
NOISE = ("wall_time", "tokens_per_s", "samples_per_s", "throughput", "time_s", "run_dir")


def is_noise(metric: str) -> bool:
    last = metric.rsplit("/", 1)[-1]
    return any(s in metric for s in NOISE) or last in ("steps", "step") or last.endswith("_step")


def _sort_key(value: str) -> tuple:
    try:
        return (0, float(value), value)
    except ValueError:
        return (1, 0.0, value)


def swept_keys(jobs: list[Job]) -> list[str]:
    """Overridden keys whose value differs between jobs (absent counts as a value), `seed` and hydra.* excluded,
    in the order they first appear."""
    keys: list[str] = []
    for job in jobs:
        keys += [k for k in job.overrides if k not in keys and k != "seed" and not k.startswith("hydra.")]
    return [k for k in keys if len({job.overrides.get(k, DEFAULT) for job in jobs}) > 1]


def default_metrics(finished: list[Job]) -> list[str]:
    """Every numeric metric that all finished jobs have, minus noise, in the first job's order."""
    return [m for m in finished[0].metrics if not is_noise(m) and all(j.number(m) is not None for j in finished)]


@dataclass
class Row:
    key: tuple[str, ...]
    jobs: list[Job] = field(default_factory=list)

    @property
    def finished(self) -> list[Job]:
        return [j for j in self.jobs if j.finished]

    @property
    def missing(self) -> list[Job]:
        return [j for j in self.jobs if not j.finished]

    def values(self, metric: str) -> list[float]:
        return [v for v in (j.number(metric) for j in self.finished) if v is not None]

    def seeds(self) -> list[str]:
        return [j.overrides.get("seed", "?") for j in self.finished]

    def label(self, group: list[str]) -> str:
        return ", ".join(f"{k}={v}" for k, v in zip(group, self.key)) or "all"


@dataclass
class Table:
    group: list[str]
    metrics: list[str]
    percent: set[str]
    rows: list[Row]

    @property
    def missing(self) -> list[Job]:
        return [j for r in self.rows for j in r.missing]

    def stats(self, row: Row, metric: str) -> tuple[float, float | None, int]:
        """(mean, sample std or None when n < 2, n), scaled to % for percent metrics; mean NaN when n = 0."""
        scale = 100.0 if metric in self.percent else 1.0
        xs = [v * scale for v in row.values(metric)]
        if not xs:
            return math.nan, None, 0
        return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else None), len(xs)


def aggregate(jobs: list[Job], group: list[str] | None = None, metrics: list[str] | None = None,
              percent: list[str] | None = None) -> Table:
    """Pool `jobs` into rows. `group` defaults to the swept keys, `metrics` to `default_metrics`; `percent=[]`
    shows every metric with `acc` in its name as %, `None` none. Unknown keys or metrics raise ReportError."""
    finished = [j for j in jobs if j.finished]
    if not finished:
        raise ReportError(f"none of the {len(jobs)} job(s) has finished (no metrics.json): "
                          + ", ".join(str(j.dir) for j in jobs[:5]) + (" ..." if len(jobs) > 5 else ""))
    overridden = sorted({k for j in jobs for k in j.overrides})
    if group is None:
        group = swept_keys(jobs)
    for key in group:
        if key not in overridden:
            keys = ", ".join(overridden) or "none"
            raise ReportError(f"--group {key}: no job overrides it (overridden keys: {keys})")
    if metrics is None:
        metrics = default_metrics(finished)
        if not metrics:
            raise ReportError("the finished jobs share no numeric metric in metrics.json; name some with --metrics")
    available = sorted({m for j in finished for m in j.metrics if j.number(m) is not None})
    for m in metrics:
        if all(j.number(m) is None for j in finished):
            raise ReportError(f"metric {m!r}: no finished job has it in metrics.json "
                              f"(available: {', '.join(available)})")
    if percent is None:
        pct: set[str] = set()
    elif not percent:
        pct = {m for m in metrics if "acc" in m}
    else:
        pct = set(percent)
        unknown = pct - set(metrics)
        if unknown:
            raise ReportError(f"--percent {' '.join(sorted(unknown))}: not among the table's metrics")
    rows: dict[tuple[str, ...], Row] = {}
    for job in jobs:
        key = tuple(job.overrides.get(k, DEFAULT) for k in group)
        rows.setdefault(key, Row(key)).jobs.append(job)
    ordered = [rows[k] for k in sorted(rows, key=lambda key: [_sort_key(v) for v in key])]
    return Table(list(group), list(metrics), pct, ordered)


def fmt_number(x: float) -> str:
    if x == int(x) and abs(x) < 1e15:
        return str(int(x))
    return f"{x:.4g}"


def fmt_cell(mean: float, std: float | None, n: int, percent: bool = False) -> str:
    """`mean ± std (n)`: std to 2 significant digits and the mean to the same decimal place (% to 0.1);
    `mean (1)` for one job, `n/a (0)` for none."""
    if n == 0:
        return "n/a (0)"
    if percent:
        return f"{mean:.1f} ({n})" if std is None else f"{mean:.1f} ± {std:.1f} ({n})"
    if std is None:
        return f"{fmt_number(mean)} ({n})"
    if std == 0:
        return f"{fmt_number(mean)} ± 0 ({n})"
    if abs(mean) >= 1e6 or (abs(mean) < 1e-4 and mean != 0):
        return f"{mean:.3e} ± {std:.1e} ({n})"
    decimals = min(8, max(0, 1 - math.floor(math.log10(std))))
    return f"{mean:.{decimals}f} ± {std:.{decimals}f} ({n})"


def _md(text: str) -> str:
    return str(text).replace("|", "\\|")


def markdown(table: Table) -> str:
    """The table, a line on what the cells are, and the missing jobs."""
    head = [*(table.group or ["runs"]), "seeds"] + [m + (" (%)" if m in table.percent else "") for m in table.metrics]
    lines = ["| " + " | ".join(map(_md, head)) + " |", "|" + "---|" * len(head)]
    for row in table.rows:
        seeds = ",".join(row.seeds()) or "-"
        if row.missing:
            seeds += f" (+{len(row.missing)} missing)"
        cells = [fmt_cell(*table.stats(row, m), percent=m in table.percent) for m in table.metrics]
        lines.append("| " + " | ".join(map(_md, [*(row.key or ("all",)), seeds, *cells])) + " |")
    n_jobs = sum(len(r.jobs) for r in table.rows)
    lines += ["", f"Cells: mean ± std (n) over each row's finished jobs (sample std); {n_jobs} job(s) in all."]
    if table.missing:
        lines += ["", "Missing (left out, counted nowhere):"]
        for job in table.missing:
            ov = " ".join(f"{k}={v}" for k, v in job.overrides.items())
            lines.append(f"- `{job.dir}`: {job.why_missing}" + (f" ({ov})" if ov else ""))
    return "\n".join(lines) + "\n"
