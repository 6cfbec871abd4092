"""Judging a study's run dirs: the per-seed table, the paired differences and the verdict of the study's rule.

Values are read from each job's metrics.json (src.report's reader); an arm's `prefix` is put before the metric
name. A job that has not finished is listed as missing, never counted; the rule is applied only when every judged
arm has every seed, and says `incomplete` otherwise.
"""

from __future__ import annotations

import importlib
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from src.report.collect import Job
from src.reproduce.launch import job_dir
from src.reproduce.study import Study, StudyError

Values = dict[str, dict[int, dict[str, float]]]  # arm -> seed -> metric -> value
Curves = dict[str, dict[int, dict[str, list[tuple[int, float]]]]]  # arm -> seed -> column -> [(step, value)]


@dataclass
class Criterion:
    """One line of a verdict: what is required, what was measured, whether it holds."""

    name: str
    detail: str
    passed: bool


def collect(study: Study, out: Path, seeds: list[int]) -> tuple[Values, list[str]]:
    """(values, missing jobs) of the study's arms for these seeds."""
    values: Values = {}
    missing = []
    for arm in study.arms:
        values[arm.name] = {}
        for s in seeds:
            d = job_dir(out, arm.runs, s)
            job = Job.read(d) if d.is_dir() else None
            if job is None or not job.finished:
                missing.append(f"{arm.name} seed {s}: {job.why_missing if job else 'not run'}")
                continue
            row = {}
            for key in job.metrics or {}:
                if key.startswith(arm.prefix):
                    v = job.number(key)
                    if v is not None:
                        row[key[len(arm.prefix):]] = v
            values[arm.name][s] = row
    return values, missing


def _fmt(v: float | None, pct: bool) -> str:
    if v is None:
        return "—"
    return f"{100 * v:.1f}" if pct else f"{v:.3g}" if abs(v) < 100 else f"{v:.1f}"


def mean_std(xs: list[float]) -> tuple[float, float]:
    return (statistics.fmean(xs), statistics.stdev(xs) if len(xs) > 1 else 0.0)


def seed_table(study: Study, values: Values, seeds: list[int]) -> str:
    """Rows (arm, seed) and (arm, mean ± std); columns the study's metrics (% where `percent` names them)."""
    cols = study.metrics
    head = "| arm | seed | " + " | ".join(f"{m} (%)" if m in study.percent else m for m in cols) + " |"
    lines = [head, "|---|---|" + "---|" * len(cols)]
    for arm in study.arms:
        rows = values.get(arm.name, {})
        for s in seeds:
            if s in rows:
                cells = [_fmt(rows[s].get(m), m in study.percent) for m in cols]
                lines.append(f"| {arm.name} | {s} | " + " | ".join(cells) + " |")
        if len(rows) > 1:
            cells = []
            for m in cols:
                xs = [r[m] for r in rows.values() if m in r]
                if not xs:
                    cells.append("—")
                    continue
                mu, sd = mean_std(xs)
                k = 100 if m in study.percent else 1
                cells.append(f"{_fmt(mu * k, False)} ± {_fmt(sd * k, False)}")
            lines.append(f"| **{arm.name}** | mean ± std | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def paired(values: Values, a: str, b: str, metric: str, seeds: list[int]) -> dict[int, float]:
    """a − b per seed, over the seeds where both arms have the metric."""
    return {s: values[a][s][metric] - values[b][s][metric] for s in seeds
            if metric in values.get(a, {}).get(s, {}) and metric in values.get(b, {}).get(s, {})}


def pairs_table(study: Study, values: Values, seeds: list[int]) -> str:
    if not study.pairs:
        return ""
    lines = ["| difference | " + " | ".join(f"seed {s}" for s in seeds) + " | mean ± std |",
             "|---|" + "---|" * (len(seeds) + 1)]
    for a, b, m in study.pairs:
        k = 100 if m in study.percent else 1
        per = paired(values, a, b, m, seeds)
        cells = [_fmt(per[s] * k, False) if s in per else "—" for s in seeds]
        unit = " (points)" if m in study.percent else ""
        if per:
            mu, sd = mean_std(list(per.values()))
            summary = f"{_fmt(mu * k, False)} ± {_fmt(sd * k, False)}"
        else:
            summary = "—"
        lines.append(f"| {a} − {b}: {m}{unit} | " + " | ".join(cells) + f" | {summary} |")
    return "\n".join(lines)


def rule_function(study: Study) -> tuple[Callable[..., list[Criterion]], dict[str, Any]]:
    target = str(study.rule["_target_"])
    module, _, name = target.rpartition(".")
    try:
        fn = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError):
        raise StudyError(f"{study.path}: rule._target_={target} is not a function (see src/reproduce/rules.py)"
                         ) from None
    return fn, {k: v for k, v in study.rule.items() if k != "_target_"}


def load_curves(study: Study, out: Path, seeds: list[int]) -> Curves:
    """The study's `curves` columns of every finished job (csv/metrics.csv; an arm's prefix names its stage dir)."""
    found: Curves = {}
    for arm in study.arms:
        found[arm.name] = {}
        for s in seeds:
            d = job_dir(out, arm.runs, s)
            if not (d / "metrics.json").is_file():
                continue
            job = Job.read(d)
            job.stage = arm.prefix.rstrip("/")
            found[arm.name][s] = {c: job.curves().get(c, []) for c in study.curves}
    return found


def verdict(study: Study, values: Values, seeds: list[int], missing: list[str], curves: Curves | None = None
            ) -> tuple[str, str]:
    """(verdict word, markdown lines): `reproduced`, `not reproduced` or `incomplete`."""
    fn, params = rule_function(study)
    judged = [a.name for a in study.arms if a.judged]
    gaps = [m for m in missing if m.split(" seed ")[0] in judged]
    if gaps:
        return "incomplete", "Not judged: missing jobs: " + "; ".join(gaps)
    if study.curves:
        params = {**params, "curves": {a: (curves or {}).get(a, {}) for a in judged}}
    crits = fn({a: values[a] for a in judged}, seeds, **params)
    word = "reproduced" if all(c.passed for c in crits) else "not reproduced"
    lines = [f"- [{'x' if c.passed else ' '}] **{c.name}**: {c.detail}" for c in crits]
    return word, "\n".join(lines)


def curve_plot(study: Study, values: Values, seeds: list[int], path: Path) -> Path | None:
    """The study's `plot`: each arm's mean (± std band over seeds) of its final `metrics` placed at `x`, or of the
    logged `curve` (a csv/metrics.csv column) against the step, or (`pairs: true`) the study's paired differences,
    one dot per seed and the mean ± std."""
    spec = study.plot
    if not spec:
        return None
    import matplotlib

    from src.plots.save import save_png

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    if spec.get("pairs"):
        _pair_dots(ax, study, values, seeds)
    elif spec.get("curve"):
        _curves(ax, study, spec["curve"], seeds, out_dir=path.parent, x=spec.get("curve_x"))
    else:
        _points(ax, study, spec, values, seeds)
    if spec.get("hline"):
        ref = [r[spec["hline"]] for a in values.values() for r in a.values() if spec["hline"] in r]
        if ref:
            ax.axhline(statistics.fmean(ref), ls="--", c="gray", label=spec.get("hline_label", spec["hline"]))
    if spec.get("log2x"):
        ax.set_xscale("log", base=2)
    ax.set(xlabel=spec.get("xlabel", "x"), ylabel=spec.get("ylabel", ""), title=f"{study.name} ({len(seeds)} seeds)")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    save_png(fig, path)
    return path


def _band(ax: Any, xs: list[float], ys: list[list[float]], label: str) -> None:
    """The mean of each x's values, with a ± std band over seeds."""
    mu = [statistics.fmean(y) if y else float("nan") for y in ys]
    sd = [statistics.stdev(y) if len(y) > 1 else 0.0 for y in ys]
    line, = ax.plot(xs, mu, "o-" if len(xs) < 20 else "-", label=label)
    ax.fill_between(xs, [m - s for m, s in zip(mu, sd)], [m + s for m, s in zip(mu, sd)], color=line.get_color(),
                    alpha=0.15)


def _curves(ax: Any, study: Study, column: str, seeds: list[int], out_dir: Path, x: str | None = None) -> None:
    """Each arm's logged `column` (csv/metrics.csv) against the step, or against the seeds' mean of another logged
    column `x` at the same steps (e.g. train/docs_seen), over the steps every seed logged."""
    for arm in study.arms:
        jobs = [Job.read(job_dir(out_dir, arm.runs, s)) for s in seeds if job_dir(out_dir, arm.runs, s).is_dir()]
        for j in jobs:
            j.stage = arm.prefix.rstrip("/")
        runs = [(dict(j.curves().get(column, [])), dict(j.curves().get(x, [])) if x else {}) for j in jobs]
        runs = [(r, xs) for r, xs in runs if r and (xs or not x)]
        if not runs:
            continue
        steps = sorted(set.intersection(*(set(r) & (set(xs) if x else set(r)) for r, xs in runs)))
        at = [statistics.fmean(xs[t] for _, xs in runs) for t in steps] if x else steps
        _band(ax, at, [[r[t] for r, _ in runs] for t in steps], f"{arm.name} (n={len(runs)})")


def _pair_dots(ax: Any, study: Study, values: Values, seeds: list[int]) -> None:
    """One row per study pair: each seed's difference a − b (points where the metric is a percentage) and the
    mean ± std; a vertical line at 0."""
    rows = list(reversed(study.pairs))
    for i, (a, b, m) in enumerate(rows):
        k = 100 if m in study.percent else 1
        per = [v * k for v in paired(values, a, b, m, seeds).values()]
        if not per:
            continue
        ax.scatter(per, [i] * len(per), s=18, alpha=0.7, color="tab:blue")
        mu, sd = mean_std(per)
        ax.errorbar([mu], [i], xerr=[sd], fmt="D", color="black", capsize=3)
    ax.axvline(0, color="gray", lw=1)
    ax.set_yticks(range(len(rows)), [f"{a} − {b}" for a, b, _ in rows])


def _points(ax: Any, study: Study, spec: dict[str, Any], values: Values, seeds: list[int]) -> None:
    """Each arm's final `metrics` placed at `x` (e.g. length at each canvas)."""
    xs, metrics = list(spec["x"]), list(spec["metrics"])
    for arm in study.arms:
        rows = [values[arm.name][s] for s in seeds if s in values.get(arm.name, {})]
        if not rows:
            continue
        _band(ax, xs, [[r[m] for r in rows if m in r] for m in metrics], f"{arm.name} (n={len(rows)})")
