"""`python -m src.report` on hand-made run dirs: table numbers (mean/std/n by hand), grouping, missing jobs, plots,
errors. No training."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import yaml

from src.report.__main__ import main
from src.report.collect import load_jobs, read_csv_curves
from src.report.curves import row_curve
from src.report.table import aggregate

ROOT = Path(__file__).resolve().parents[1]

# lr -> per seed (val/loss, acc); the train/loss curve of job (lr, seed) is 3 - step/10 * k + seed/100.
VALUES = {"0.001": {1: (2.0, 0.5), 2: (2.2, 0.6), 3: (2.4, 0.7)},
          "0.003": {1: (1.0, 0.9), 2: (1.5, 0.9), 3: (2.0, 0.9)}}
SLOPE = {"0.001": 1.0, "0.003": 2.0}


def make_run(run: Path, overrides: list[str], metrics: dict | None, curve: list[tuple[int, float, float]] = ()):
    """A run dir as train.py leaves it: .hydra/overrides.yaml, metrics.json, csv/metrics.csv (Lightning's sparse
    rows: train/loss on its own rows, val/loss on others, lr rows with no metric)."""
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    if metrics is not None:
        (run / "metrics.json").write_text(json.dumps(metrics))
    if curve:
        (run / "csv").mkdir()
        lines = ["epoch,lr-AdamW,step,train/loss,val/loss"]
        for step, train, val in curve:
            lines += [f",0.001,{step},,", f"0,,{step},{train},"]
            if val is not None:
                lines.append(f"0,,{step},,{val}")
        (run / "csv" / "metrics.csv").write_text("\n".join(lines) + "\n")


def make_sweep(root: Path) -> Path:
    """2 lr × 3 seeds as Hydra numbers them, plus a 7th job (lr=0.003, seed=4) that never wrote metrics.json."""
    sweep = root / "multirun"
    job = 0
    for lr, seeds in VALUES.items():
        for seed, (val, acc) in seeds.items():
            metrics = {"steps": 20, "val/loss": val, "addition/acc": acc, "wall_time_s": 10.0 + job,
                       "train/tokens_per_s_median": 400.0 + job, "run_dir": f"/x/{job}"}
            if job == 0:
                metrics["extra"] = 7.0  # only one job has it: not a default column
            curve = [(s, 3 - s / 10 * SLOPE[lr] + seed / 100, 2.5 if s % 5 == 4 else None) for s in range(10)]
            make_run(sweep / str(job), ["debug=smoke", f"method.optimizer.lr={lr}", f"seed={seed}"], metrics, curve)
            job += 1
    make_run(sweep / str(job), ["debug=smoke", "method.optimizer.lr=0.003", "seed=4"], None)
    (sweep / "multirun.yaml").write_text("hydra: {}\n")
    return sweep


def test_rows_are_the_swept_values_cells_mean_std_n_and_missing_jobs_count_nowhere(tmp_path, capsys) -> None:
    sweep = make_sweep(tmp_path)
    assert main([str(sweep), "--percent"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    # lr is the only swept key (debug is shared, seed is pooled); wall-clock/throughput/steps/run_dir and `extra`
    # (not in every job) are not default columns; `acc` as % via --percent.
    assert lines[0] == "| method.optimizer.lr | seeds | val/loss | addition/acc (%) |"
    # 0.001: val 2.0/2.2/2.4 -> 2.2 ± 0.2; acc 50/60/70 % -> 60 ± 10. 0.003: 1.0/1.5/2.0 -> 1.5 ± 0.5; 90 ± 0.
    assert lines[2] == "| 0.001 | 1,2,3 | 2.20 ± 0.20 (3) | 60.0 ± 10.0 (3) |"
    assert lines[3] == "| 0.003 | 1,2,3 (+1 missing) | 1.50 ± 0.50 (3) | 90.0 ± 0.0 (3) |"
    assert f"- `{sweep / '6'}`: no metrics.json (debug=smoke method.optimizer.lr=0.003 seed=4)" in out
    report = (sweep / "report.md").read_text()
    assert lines[2] in report and "![train/loss](report_train_loss.png)" in report
    assert not [p for p in sweep.iterdir() if p.name.startswith(".")]  # atomic writes leave no temp files


def test_chosen_metrics_groups_and_several_dirs(tmp_path, capsys) -> None:
    sweep = make_sweep(tmp_path)
    jobs = load_jobs([sweep])
    assert [j.dir.name for j in jobs] == [str(i) for i in range(7)] and not jobs[6].finished
    table = aggregate(jobs, metrics=["extra", "val/loss"])
    assert [r.key for r in table.rows] == [("0.001",), ("0.003",)]
    assert table.stats(table.rows[0], "extra") == (7.0, None, 1) and table.stats(table.rows[1], "extra")[2] == 0

    # run dirs given one by one (budget_sweep-style names), pooled with the sweep, one row per seed
    single = tmp_path / "singles"
    make_run(single / "lr-0.01_seed-1", ["method.optimizer.lr=0.01", "seed=1"], {"val/loss": 3.0})
    make_run(single / "lr-0.01_seed-2", ["method.optimizer.lr=0.01", "seed=2"], {"val/loss": 4.0})
    out_dir = tmp_path / "out"
    assert main([str(single / "lr-0.01_seed-1"), str(single / "lr-0.01_seed-2"), str(sweep), "--group", "seed",
                 "--metrics", "val/loss", "steps", "extra", "--out", str(out_dir), "--curves"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "| seed | seeds | val/loss | steps | extra |"
    # seed 1: 3.0 (lr 0.01), 2.0, 1.0 -> 2 ± 1; seed 2: 4.0, 2.2, 1.5 -> 2.57 ± 1.29; steps only in the sweep's
    # jobs; seed 4 only missing.
    assert lines[2] == "| 1 | 1,1,1 | 2.0 ± 1.0 (3) | 20 ± 0 (2) | 7 (1) |"
    assert lines[3] == "| 2 | 2,2,2 | 2.6 ± 1.3 (3) | 20 ± 0 (2) | n/a (0) |"
    assert lines[5] == "| 4 | - (+1 missing) | n/a (0) | n/a (0) | n/a (0) |"
    assert sorted(p.name for p in out_dir.iterdir()) == ["report.md"]  # --curves alone: no plots


def test_curves_mean_and_band_per_row_and_pngs(tmp_path, capsys) -> None:
    sweep = make_sweep(tmp_path)
    table = aggregate(load_jobs([sweep]))
    steps, mean, lo, hi, n = row_curve(table.rows[0], "train/loss")  # 3 seeds: ± sample std
    seeds = np.array([1, 2, 3]) / 100
    assert n == 3 and steps.tolist() == list(range(10))
    assert np.allclose(mean, 3 - steps / 10 + 0.02) and np.allclose(hi - mean, seeds.std(ddof=1))
    steps, mean, lo, hi, n = row_curve(table.rows[0], "val/loss")
    assert steps.tolist() == [4, 9] and np.allclose(mean, 2.5)

    two = aggregate(load_jobs([sweep / "0", sweep / "1"]), group=["seed"])  # a row per seed: n = 1, no band
    assert row_curve(two.rows[0], "train/loss")[4] == 1
    pair = aggregate(load_jobs([sweep / "0", sweep / "1"]), group=["method.optimizer.lr"])  # n = 2: min–max
    steps, mean, lo, hi, n = row_curve(pair.rows[0], "train/loss")
    assert n == 2 and np.allclose(lo, 3 - steps / 10 + 0.01) and np.allclose(hi, 3 - steps / 10 + 0.02)

    assert main([str(sweep), "--curves", "train/loss", "val/loss", "lr-AdamW"]) == 0
    assert "report_train_loss.png, report_val_loss.png, report_lr-AdamW.png" in capsys.readouterr().out
    for name in ("report_train_loss.png", "report_val_loss.png", "report_lr-AdamW.png"):
        data = (sweep / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


def test_errors_are_one_line_and_exit_status_2(tmp_path, capsys) -> None:
    sweep = make_sweep(tmp_path)
    (tmp_path / "empty").mkdir()
    cases = {
        (str(tmp_path / "empty"),): "is neither a run dir",
        (str(tmp_path / "nope"),): "no such directory",
        (str(sweep), "--metrics", "val/los"): "metric 'val/los': no finished job has it",
        (str(sweep), "--curves", "val/acc"): "curve 'val/acc': no finished job logged it",
        (str(sweep), "--group", "lr"): "--group lr: no job overrides it",
        (str(sweep / "6"),): "none of the 1 job(s) has finished",
    }
    for argv, message in cases.items():
        assert main(list(argv)) == 2, argv
        captured = capsys.readouterr()
        assert captured.err.startswith("error: ") and message in captured.err and captured.err.count("\n") == 1
    assert not (tmp_path / "empty" / "report.md").exists() and not (sweep / "report.md").exists()

    cli = subprocess.run([sys.executable, "-m", "src.report", str(tmp_path / "empty")], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert cli.returncode == 2 and "Traceback" not in cli.stderr, cli.stderr
    assert cli.stderr.strip() == f"error: {tmp_path / 'empty'} is neither a run dir (metrics.json or " \
                                 ".hydra/overrides.yaml) nor a multirun dir (sub-directories that are run dirs)"


@pytest.mark.parametrize("percent", [["addition/acc"], []])
def test_percent_by_name_or_every_accuracy(tmp_path, percent) -> None:
    table = aggregate(load_jobs([make_sweep(tmp_path)]), percent=percent)
    assert table.percent == {"addition/acc"}
    assert table.stats(table.rows[0], "addition/acc")[0] == pytest.approx(60.0)


def test_wandb_gets_the_table_with_numeric_columns_and_the_plots(tmp_path, capsys, monkeypatch) -> None:
    """A stand-in `wandb` module (a real offline run costs seconds; `--wandb` with WANDB_MODE=offline was checked by
    hand and writes <out>/wandb/offline-run-*/ with the table and both images)."""
    logged, calls = {}, {}

    class Run:
        dir = str(tmp_path / "wandb" / "offline-run-x" / "files")

        def log(self, data):
            logged.update(data)

        def finish(self):
            calls["finished"] = True

    fake = types.SimpleNamespace(init=lambda **kw: calls.update(kw) or Run(),
                                 Table=lambda columns, data: ("table", columns, data),
                                 Image=lambda path: ("image", path))
    monkeypatch.setitem(sys.modules, "wandb", fake)
    monkeypatch.setenv("TOKENSMITH_CACHE", str(tmp_path / "cache"))
    for key in ("WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR"):
        monkeypatch.delenv(key, raising=False)  # restored (unset) after the test, whatever the report sets
    sweep = make_sweep(tmp_path)
    assert main([str(sweep), "--metrics", "val/loss", "--curves", "train/loss", "--wandb"]) == 0
    assert f"W&B: {tmp_path / 'wandb' / 'offline-run-x'}" in capsys.readouterr().out
    assert calls["finished"] and calls["job_type"] == "report" and calls["dir"] == str(sweep)
    kind, columns, data = logged["report/table"]
    assert columns == ["method.optimizer.lr", "seeds", "val/loss mean", "val/loss std", "val/loss n"]
    assert data[1][:2] == ["0.003", "1,2,3"] and data[1][2:] == pytest.approx([1.5, 0.5, 3])
    assert logged["report/train/loss"] == ("image", str(sweep / "report_train_loss.png"))
    assert os.environ["WANDB_CACHE_DIR"] == str(tmp_path / "cache" / "wandb")  # W&B side files not in $HOME


def test_csv_curves_skip_empty_cells_and_a_resumed_run_keeps_the_last_value_of_a_step(tmp_path) -> None:
    path = tmp_path / "metrics.csv"
    path.write_text("epoch,step,train/loss,val/loss\n0,0,3.0,\n0,1,2.5,\n0,1,,2.9\n0,1,2.4,\n0,2,nan,\n,x,1.0,\n")
    assert read_csv_curves(path) == {"train/loss": [(0, 3.0), (1, 2.4)], "val/loss": [(1, 2.9)]}
    assert read_csv_curves(tmp_path / "absent.csv") == {}


def test_rl_stage_curves_against_a_logged_budget_smoothed(tmp_path, capsys) -> None:
    """A two-stage RL sweep: curves from <job>/finetune/csv, x = back-propagated tokens (the row's mean over seeds
    at each step), trailing mean of 2 points. By hand, mode d3s: seed 1 rewards 0, 1, 0, 1 at tokens 10, 20, 30, 40;
    seed 2 rewards 1, 1, 1, 1 at tokens 30, 40, 50, 60 -> smoothed 0, .5, .5, .5 and 1, 1, 1, 1 -> mean .5, .75,
    .75, .75 at mean tokens 20, 30, 40, 50."""
    sweep = tmp_path / "multirun"
    rewards = {("d3s", 1): ([0, 1, 0, 1], 10), ("d3s", 2): ([1, 1, 1, 1], 30), ("none", 1): ([0, 0, 0, 0], 100)}
    for job, ((mode, seed), (values, start)) in enumerate(rewards.items()):
        run = sweep / str(job)
        make_run(run, [f"downsample={mode}", f"seed={seed}"], {"finetune/val/reward": sum(values) / 4})
        (run / "finetune" / "csv").mkdir(parents=True)
        lines = ["step,train/reward_mean,train/backprop_tokens"]
        lines += [f"{s},{v},{start + 10 * s}" for s, v in enumerate(values)]
        (run / "finetune" / "csv" / "metrics.csv").write_text("\n".join(lines) + "\n")
    table = aggregate(load_jobs([sweep], stage="finetune"))
    at, mean, lo, hi, n = row_curve(table.rows[0], "train/reward_mean", x="train/backprop_tokens", smooth=2)
    assert table.rows[0].key == ("d3s",) and n == 2
    assert at.tolist() == [20, 30, 40, 50] and mean.tolist() == [0.5, 0.75, 0.75, 0.75]
    assert lo.tolist() == [0, 0.5, 0.5, 0.5] and hi.tolist() == [1, 1, 1, 1]  # 2 seeds: min–max

    argv = [str(sweep), "--stage", "finetune", "--curves", "train/reward_mean", "--x", "step",
            "train/backprop_tokens", "--smooth", "2"]
    assert main(argv) == 0
    assert "report_train_reward_mean.png" in capsys.readouterr().out
    assert (sweep / "report_train_reward_mean.png").read_bytes()[:4] == b"\x89PNG"
    assert "--x step train/backprop_tokens" in (sweep / "report.md").read_text()  # the command, to rerun it

    for bad, message in ((["--x", "train/seconds"], "--x 'train/seconds': no finished job logged it"),
                         (["--smooth", "0"], "--smooth 0: must be >= 1")):
        assert main([str(sweep), "--stage", "finetune", "--curves", "train/reward_mean", *bad]) == 2
        assert message in capsys.readouterr().err
    assert main([str(sweep), "--stage", "sft"]) == 2
    assert "--stage sft: no job has a sft/ sub-directory" in capsys.readouterr().err


def test_runs_placed_with_paths_output_dir_are_grouped_by_their_command_line(tmp_path, capsys) -> None:
    """`train.py ... paths.output_dir=DIR` leaves Hydra's .hydra/ elsewhere: the overrides come from command.txt."""
    for cur, seed, acc in (("skillit", 1, 0.5), ("skillit", 2, 0.7), ("random", 1, 0.2)):
        run = tmp_path / f"{cur}_s{seed}"
        run.mkdir()
        (run / "command.txt").write_text(f"train.py experiment=grpo/arith_skillit curriculum={cur} seed={seed} "
                                         f"paths.output_dir={run} 'callbacks.progress_bar=null'\n")
        (run / "metrics.json").write_text(json.dumps({"finetune/arith/acc": acc}))
    (tmp_path / "skillit_s2" / "command.txt").write_text(shlex.join(  # as train.py writes it now: shell-quoted
        ["train.py", "experiment=grpo/arith_skillit", "curriculum=skillit", "seed=2", "+skillit={eta: 2.0}"]))
    runs = sorted(str(p) for p in tmp_path.iterdir())
    assert main([*runs, "--group", "curriculum", "--percent", "--out", str(tmp_path / "r")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[2] == "| random | 1 | 20.0 (1) |" and lines[3] == "| skillit | 1,2 | 60.0 ± 14.1 (2) |"
    assert load_jobs([tmp_path / "skillit_s2"])[0].overrides["skillit"] == "{eta: 2.0}"

    (tmp_path / "random_s1" / "command.txt").write_text("train.py -m curriculum=random,skillit seed=1\n")
    assert main([*runs, "--group", "curriculum"]) == 2  # a multirun's line says nothing of this job's values
    assert "is a multirun's command line" in capsys.readouterr().err
