"""Finding and reading run directories.

A run dir holds `.hydra/overrides.yaml` (the job's command-line overrides), `metrics.json` (final metrics, written
when the run ends) and `csv/metrics.csv` (every logged metric per logged step). A two-stage run (a `finetune:`
or recipe stage) keeps each later stage's CSV in its own sub-directory (`<run dir>/finetune/csv/metrics.csv`):
`stage` names it. A multirun dir holds run dirs:
Hydra names them 0, 1, ...; `scripts/budget_sweep.py` names them after the swept values. A job without
metrics.json (crashed, still running, stopped at a budget) is kept as missing, never counted as zeros.
"""

from __future__ import annotations

import csv
import json
import math
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


class ReportError(Exception):
    """A problem with what the user asked for (a path, a metric): printed as one line, exit status 2."""


def is_run_dir(path: Path) -> bool:
    return (path / ".hydra" / "overrides.yaml").is_file() or (path / "metrics.json").is_file()


def parse_overrides(overrides: list[str]) -> dict[str, str]:
    """`["a.b=1", "+c=x", "~d"]` -> {"a.b": "1", "c": "x", "d": "(deleted)"}; values stay strings."""
    out = {}
    for ov in overrides:
        ov = str(ov)
        if ov.startswith("~"):
            out[ov[1:].split("=", 1)[0]] = "(deleted)"
        elif "=" in ov:
            key, value = ov.split("=", 1)
            out[key.lstrip("+")] = value
    return out


def command_overrides(path: Path) -> dict[str, str]:
    """The overrides of the `command.txt` train.py writes (`train.py a=1 seed=2 paths.output_dir=...`, shell-quoted;
    runs before 2026-12-04 joined the words with spaces), paths.* left out (where a run was written is not what it
    was); {} when there is none. A multirun's command line says what was swept, not this job's values: an error."""
    try:
        text = path.read_text()
    except OSError:
        return {}
    try:
        words = shlex.split(text)
    except ValueError:  # an unquoted ' or " in an old, space-joined command line
        words = text.split()
    if "-m" in words or "--multirun" in words:
        raise ReportError(f"{path.parent}: no .hydra/overrides.yaml, and {path.name} is a multirun's command line, "
                          "which does not say this job's values; report on the multirun dir Hydra wrote instead")
    return {k: v for k, v in parse_overrides([w for w in words[1:] if "=" in w or w.startswith("~")]).items()
            if not k.startswith(("paths.", "hydra."))}


@dataclass
class Job:
    dir: Path
    overrides: dict[str, str]
    metrics: dict | None  # None: no (readable) metrics.json
    why_missing: str = ""
    stage: str = ""  # sub-directory whose csv/metrics.csv holds the curves ("" = the run dir's own)
    _curves: dict[str, list[tuple[int, float]]] | None = field(default=None, repr=False)

    @classmethod
    def read(cls, run_dir: Path) -> Job:
        ov_file = run_dir / ".hydra" / "overrides.yaml"
        if ov_file.is_file():
            overrides = parse_overrides(yaml.safe_load(ov_file.read_text()) or [])
        else:  # a run placed with paths.output_dir keeps Hydra's files elsewhere; its command line says the same
            overrides = command_overrides(run_dir / "command.txt")
        metrics_file = run_dir / "metrics.json"
        if not metrics_file.is_file():
            return cls(run_dir, overrides, None, "no metrics.json")
        try:
            metrics = json.loads(metrics_file.read_text())
        except (OSError, ValueError) as e:
            return cls(run_dir, overrides, None, f"unreadable metrics.json ({e.__class__.__name__})")
        if not isinstance(metrics, dict):
            return cls(run_dir, overrides, None, "metrics.json is not a mapping")
        return cls(run_dir, overrides, metrics)

    @property
    def finished(self) -> bool:
        return self.metrics is not None

    def number(self, metric: str) -> float | None:
        """The final value of `metric` as a float, or None when absent, null, non-numeric or NaN."""
        value = (self.metrics or {}).get(metric)
        if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
            return None
        return float(value)

    def curves(self) -> dict[str, list[tuple[int, float]]]:
        """Every column of csv/metrics.csv as (step, value) pairs sorted by step; a step logged twice (a resumed
        run) keeps its last value; an older RL run's task metrics moved to its generation-batch axis
        (`on_logger_axis`). Empty when the run has no CSV log."""
        if self._curves is None:
            self._curves = on_logger_axis(read_csv_curves(self.dir / self.stage / "csv" / "metrics.csv"),
                                          self.metrics or {}, f"{self.stage}/" if self.stage else "")
        return self._curves


def on_logger_axis(curves: dict[str, list[tuple[int, float]]], metrics: dict[str, Any], prefix: str = ""
                   ) -> dict[str, list[tuple[int, float]]]:
    """Curves of an RL stage with the task metrics put on the objective's x-axis (generation batches).

    Runs before 2026-12-07 logged task evaluations (`arith/acc`) at the optimizer-update count, while `train/*` is
    logged per generation batch: with 2 PPO epochs an evaluation after batch b (0-based) was logged at update
    2(b + 1). A column whose steps go past the stage's last generation batch is on the update axis; it is mapped to
    the batch it was evaluated after, u · G / S − 1 (S updates, G generation batches), where `train/*` of that
    batch is logged. Runs from the fix on (src/callbacks/task_eval.py: `logger_step`) are already on one axis and
    pass through unchanged. Worked example: S = 400, G = 200, accuracy at update 250 -> batch 124."""
    updates, batches = metrics.get(f"{prefix}steps"), metrics.get(f"{prefix}train/generation_batches")
    if not updates or not batches or updates <= batches:
        return curves
    out = {}
    for name, points in curves.items():
        late = points and max(st for st, _ in points) > batches
        out[name] = [(round(st * batches / updates) - 1, v) for st, v in points] if late else points
    return out


def read_csv_curves(path: Path) -> dict[str, list[tuple[int, float]]]:
    if not path.is_file():
        return {}
    series: dict[str, dict[int, float]] = {}
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            try:
                step = int(float(row.get("step") or ""))
            except ValueError:
                continue
            for key, raw in row.items():
                if key in ("step", "epoch") or key is None or raw in (None, ""):
                    continue
                try:
                    value = float(raw)
                except ValueError:
                    continue
                if not math.isnan(value):
                    series.setdefault(key, {})[step] = value
    return {k: sorted(v.items()) for k, v in series.items()}


def _job_order(path: Path) -> tuple:
    return (not path.name.isdigit(), int(path.name) if path.name.isdigit() else 0, path.name)


def load_jobs(paths: list[Path], stage: str = "") -> list[Job]:
    """The jobs of run dirs and multirun dirs, in order (numbered jobs numerically, named ones by name); curves
    come from each job's `<stage>/csv/metrics.csv`."""
    jobs = []
    for path in paths:
        path = Path(path)
        if not path.is_dir():
            raise ReportError(f"{path}: no such directory")
        if is_run_dir(path):
            jobs.append(Job.read(path))
            continue
        runs = sorted((p for p in path.iterdir() if p.is_dir() and is_run_dir(p)), key=_job_order)
        if not runs:
            raise ReportError(f"{path} is neither a run dir (metrics.json or .hydra/overrides.yaml) nor a multirun "
                              "dir (sub-directories that are run dirs)")
        jobs += [Job.read(p) for p in runs]
    for job in jobs:
        job.stage = stage
    if stage and not any((j.dir / stage).is_dir() for j in jobs):
        raise ReportError(f"--stage {stage}: no job has a {stage}/ sub-directory (e.g. {jobs[0].dir / stage})")
    return jobs
