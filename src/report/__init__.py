"""Reports over finished runs: a markdown table (mean ± std over seeds) and loss curves, from run directories.

    python -m src.report outputs/<task>/multiruns/<name> [more run or multirun dirs] [--group KEY ...]

`collect` reads run dirs (metrics.json, csv/metrics.csv, .hydra/overrides.yaml), `table` pools them into rows,
`curves` plots the per-step metrics, `__main__` is the command line (also installed as `tokensmith-report`).
Only numpy, PyYAML and matplotlib are needed: no torch, so a report starts in a second.
"""

from src.report.collect import Job, ReportError, load_jobs
from src.report.table import Table, aggregate, markdown

__all__ = ["Job", "ReportError", "Table", "aggregate", "load_jobs", "markdown"]
