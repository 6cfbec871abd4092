"""`python -m src.reproduce <study>`: a pre-registered reproduction, end to end (docs/results.md).

A study is a yaml file (`src/reproduce/studies/<name>.yaml`, or any path): the experiment, its arms (override
lists), the seeds, the metrics, the paired differences and the rule, a function in `src/reproduce/rules.py` with
its thresholds. One command trains every missing (arm, seed) job through `train.py --multirun`, reads the run dirs
as `src.report` does, and prints the per-seed table, the paired differences and the verdict against the rule.
"""
