"""One PNG per per-step metric (csv/metrics.csv): one line per table row, the mean over its finished jobs, with a
band of ± std when the row has 3 or more jobs and min–max when it has 2 (none for 1); legend and title say which.

Steps are those every job of the row logged (all of them when the jobs logged at disjoint steps). Losses and
perplexities are drawn on a log y axis. Each PNG is written atomically (a temp file, then os.replace).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from src.report.table import Row, Table

DEFAULT_CURVES = ("train/loss", "val/loss")


def available(table: Table, metric: str) -> bool:
    return any(metric in j.curves() for r in table.rows for j in r.finished)


def curve_names(table: Table) -> list[str]:
    return sorted({m for r in table.rows for j in r.finished for m in j.curves()})


def row_curve(row: Row, metric: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int] | None:
    """(steps, mean, band low, band high, n jobs) for one row, or None when none of its jobs logged `metric`."""
    series = [dict(j.curves()[metric]) for j in row.finished if metric in j.curves()]
    if not series:
        return None
    common = set.intersection(*(set(s) for s in series))
    steps = sorted(common or set().union(*series))
    mean, lo, hi = [], [], []
    for step in steps:
        xs = np.array([s[step] for s in series if step in s])
        m = xs.mean()
        if len(series) >= 3:
            sd = xs.std(ddof=1) if len(xs) > 1 else 0.0
            lo.append(m - sd)
            hi.append(m + sd)
        else:
            lo.append(xs.min())
            hi.append(xs.max())
        mean.append(m)
    return np.array(steps), np.array(mean), np.array(lo), np.array(hi), len(series)


def file_name(metric: str) -> str:
    return "report_" + re.sub(r"[^A-Za-z0-9_.-]+", "_", metric).strip("_") + ".png"


def plot(table: Table, metric: str, out_dir: Path, title: str = "") -> Path | None:
    """Write `<out_dir>/report_<metric>.png`; None (nothing written) when no finished job logged `metric`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, MaxNLocator, NullLocator

    curves = [(row, c) for row in table.rows if (c := row_curve(row, metric)) is not None]
    if not curves:
        return None
    colors = plt.get_cmap("tab10" if len(curves) <= 10 else "tab20").colors
    fig, ax = plt.subplots(figsize=(8, 4.5))
    kinds = set()
    positive, low, high = True, float("inf"), 0.0
    for i, (row, (steps, mean, lo, hi, n)) in enumerate(curves):
        color = colors[i % len(colors)]
        kind = "± std" if n >= 3 else ("min–max" if n == 2 else "")
        kinds.add(kind or "none")
        label = f"{', '.join(row.key) or 'all'}  (n={n}{', ' + kind if kind else ''})"  # keys: the legend title
        ax.plot(steps, mean, "o-" if len(steps) <= 40 else "-", ms=3, lw=1.5, color=color, label=label)
        if n >= 2:
            ax.fill_between(steps, lo, hi, color=color, alpha=0.2, lw=0)
        positive = positive and bool((lo > 0).all() and (mean > 0).all())
        low, high = min(low, float(lo.min())), max(high, float(hi.max()))
    name = metric.rsplit("/", 1)[-1]
    if positive and ("loss" in name or "ppl" in name):
        ax.set_yscale("log")
        plain = FuncFormatter(lambda y, _: f"{y:g}")
        ax.yaxis.set_major_formatter(plain)
        if high / low < 20:  # within about a decade the log ticks leave a bare axis: plain ticks, log spacing
            ax.yaxis.set_major_locator(MaxNLocator(nbins=8))
            ax.yaxis.set_minor_locator(NullLocator())
    ax.set_xlabel("optimizer step")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(metric + (" (nats/token)" if name == "loss" else ""))
    ax.grid(alpha=0.3, which="both")
    bands = sorted(k for k in kinds if k != "none")
    band = "band: " + (" or ".join(bands) + " over seeds" if bands else "none (1 job per row)")
    ax.set_title(f"{title + ': ' if title else ''}{metric}, mean over seeds ({band})", fontsize=10)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False,
              title=", ".join(table.group) or None, title_fontsize=8)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / file_name(metric)
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}.png")
    try:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        tmp.unlink(missing_ok=True)
    return path
