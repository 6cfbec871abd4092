"""One PNG per per-step metric (csv/metrics.csv): one line per table row, the mean over its finished jobs, with a
band of ± std when the row has 3 or more jobs and min–max when it has 2 (none for 1); legend and title say which.

Steps are those every job of the row logged (all of them when the jobs logged at disjoint steps). Losses and
perplexities are drawn on a log y axis. Each PNG is written atomically (a temp file, then os.replace).

The x axis is the logged step (the optimizer step; in RL runs the generation batch), or any other logged column
(`xs`): e.g. `train/backprop_tokens` or `train/train_seconds` for an RL run, where the question is what a method
costs, not how many updates it takes.
The row's x at a step is its jobs' mean there, so a line is drawn against the row's mean budget. Several x axes
give side-by-side panels in one PNG. `smooth=k` averages each job's last k logged values first (a noisy per-batch
reward): a trailing moving average, so a point never uses values logged after it.
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


STEP = "step"


def trailing_mean(points: list[tuple[int, float]], k: int) -> dict[int, float]:
    """{step: mean of the value there and the k-1 logged before it} (fewer at the start); k <= 1: as logged."""
    values = np.array([v for _, v in points], dtype=float)
    if k > 1 and len(values):
        csum = np.concatenate([[0.0], np.cumsum(values)])
        idx = np.arange(1, len(values) + 1)
        values = (csum[idx] - csum[np.maximum(idx - k, 0)]) / np.minimum(idx, k)
    return {step: float(v) for (step, _), v in zip(points, values)}


def row_curve(row: Row, metric: str, x: str = STEP, smooth: int = 1
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int] | None:
    """(x, mean, band low, band high, n jobs) for one row, or None when none of its jobs logged `metric` (and `x`).
    x is the step, or the mean over the row's jobs of column `x` at each step (steps where every job logged it)."""
    jobs = [j for j in row.finished if metric in j.curves() and (x == STEP or x in j.curves())]
    series = [trailing_mean(j.curves()[metric], smooth) for j in jobs]
    if not series:
        return None
    common = set.intersection(*(set(s) for s in series))
    steps = sorted(common or set().union(*series))
    if x != STEP:
        x_series = [dict(j.curves()[x]) for j in jobs]
        steps = [s for s in steps if all(s in xs for xs in x_series)]
        if not steps:
            return None
    mean, lo, hi = [], [], []
    for step in steps:
        vals = np.array([s[step] for s in series if step in s])
        m = vals.mean()
        if len(series) >= 3:
            sd = vals.std(ddof=1) if len(vals) > 1 else 0.0
            lo.append(m - sd)
            hi.append(m + sd)
        else:
            lo.append(vals.min())
            hi.append(vals.max())
        mean.append(m)
    if x == STEP:
        at = np.array(steps, dtype=float)
    else:
        at = np.array([float(np.mean([col[step] for col in x_series])) for step in steps])
    return at, np.array(mean), np.array(lo), np.array(hi), len(series)


def file_name(metric: str) -> str:
    return "report_" + re.sub(r"[^A-Za-z0-9_.-]+", "_", metric).strip("_") + ".png"


def plot(table: Table, metric: str, out_dir: Path, title: str = "", xs: tuple[str, ...] = (STEP,),
         smooth: int = 1) -> Path | None:
    """Write `<out_dir>/report_<metric>.png` (one panel per x axis); None (nothing written) when no finished job
    logged `metric` with any of the x columns."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, MaxNLocator, NullLocator

    panels = [(x, [(row, c) for row in table.rows if (c := row_curve(row, metric, x, smooth)) is not None])
              for x in xs]
    panels = [(x, curves) for x, curves in panels if curves]
    if not panels:
        return None
    n_lines = max(len(curves) for _, curves in panels)
    colors = plt.get_cmap("tab10" if n_lines <= 10 else "tab20").colors
    fig, axes = plt.subplots(1, len(panels), figsize=(8 if len(panels) == 1 else 5.2 * len(panels), 4.5),
                             squeeze=False)
    kinds = set()
    name = metric.rsplit("/", 1)[-1]
    for ax, (x, curves) in zip(axes[0], panels):
        positive, low, high = True, float("inf"), 0.0
        for row, (at, mean, lo, hi, n) in curves:
            color = colors[table.rows.index(row) % len(colors)]  # a row keeps its colour in every panel
            kind = "± std" if n >= 3 else ("min–max" if n == 2 else "")
            kinds.add(kind or "none")
            label = f"{', '.join(row.key) or 'all'}  (n={n}{', ' + kind if kind else ''})"  # keys: the legend title
            ax.plot(at, mean, "o-" if len(at) <= 40 else "-", ms=3, lw=1.5, color=color, label=label)
            if n >= 2:
                ax.fill_between(at, lo, hi, color=color, alpha=0.2, lw=0)
            positive = positive and bool((lo > 0).all() and (mean > 0).all())
            low, high = min(low, float(lo.min())), max(high, float(hi.max()))
        if positive and ("loss" in name or "ppl" in name):
            ax.set_yscale("log")
            ax.yaxis.set_major_formatter(FuncFormatter(lambda y, _: f"{y:g}"))
            if high / low < 20:  # within about a decade the log ticks leave a bare axis: plain ticks, log spacing
                ax.yaxis.set_major_locator(MaxNLocator(nbins=8))
                ax.yaxis.set_minor_locator(NullLocator())
        ax.set_xlabel("logged step (RL: generation batch)" if x == STEP else f"{x} (mean over seeds)")
        if x == STEP:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(metric + (" (nats/token)" if name == "loss" else "")
                      + (f", trailing mean of {smooth}" if smooth > 1 else ""))
        ax.grid(alpha=0.3, which="both")
    bands = sorted(k for k in kinds if k != "none")
    band = "band: " + (" or ".join(bands) + " over seeds" if bands else "none (1 job per row)")
    fig.suptitle(f"{title + ': ' if title else ''}{metric}, mean over seeds ({band})", fontsize=10)
    axes[0][len(panels) - 1].legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False,
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
