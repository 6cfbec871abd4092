"""`ResumableCSVLogger`: Lightning's CSVLogger, except that a resumed run keeps the rows it logged before.

Lightning's CSV writer deletes an existing `metrics.csv` when it starts ("Previous log files in this directory will
be deleted"), so a run resumed from its checkpoint (preempted, requeued, killed) lost every curve point before the
resume: the D³S study's `random` seed 1 kept only updates 296-400 of its reward curve. A tokensmith run dir only
ever holds one run (`ensure_fresh_run_dir` refuses a dir with another run's files), so an existing metrics.csv is
this run's own history: the writer keeps it and appends. Steps logged again after a resume (a kill after the last
checkpoint) appear twice; readers keep the last value per step (`src/report/collect.py: read_csv_curves`).
"""

from __future__ import annotations

import csv

from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter


class AppendingWriter(ExperimentWriter):
    """Keeps an existing metrics.csv and its header (module docstring)."""

    def _check_log_dir_exists(self) -> None:
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as f:
                self.metrics_keys = list(next(csv.reader(f), []))  # new keys rewrite the file with a wider header


class ResumableCSVLogger(CSVLogger):
    """CSVLogger whose writer appends to the run's metrics.csv instead of deleting it (module docstring)."""

    @property
    @rank_zero_experiment
    def experiment(self) -> AppendingWriter:
        if self._experiment is not None:
            return self._experiment
        self._fs.makedirs(self.root_dir, exist_ok=True)
        self._experiment = AppendingWriter(log_dir=self.log_dir)
        return self._experiment
