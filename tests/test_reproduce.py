"""`python -m src.reproduce`: a study file is checked, only unfinished jobs are planned, the per-seed table and the
paired differences are right, and the rule's verdict follows the pre-registered thresholds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from src.report.collect import on_logger_axis
from src.reproduce.__main__ import main, report
from src.reproduce.judge import collect, paired
from src.reproduce.launch import job_dir, job_state, plan
from src.reproduce.rules import rainbow_lengths
from src.reproduce.study import StudyError, load_study, parse_seeds

STUDY = "rainbow_lengths"


def _job(out: Path, arm: str, seed: int, metrics: dict[str, float] | None, ckpt: bool = False) -> None:
    d = job_dir(out, arm, seed)
    (d / ".hydra").mkdir(parents=True)
    (d / ".hydra" / "overrides.yaml").write_text(f"- seed={seed}\n")
    if metrics is not None:
        (d / "metrics.json").write_text(json.dumps(metrics))
    if ckpt:
        (d / "checkpoints").mkdir()
        (d / "checkpoints" / "last.ckpt").write_text("x")


def _lengths(l1: float, l2: float, l4: float, valid: float = 1.0) -> dict[str, float]:
    return {"eval/target_len": 6.5, "eval/len@1x": l1, "eval/len@2x": l2, "eval/len@4x": l4,
            "eval/valid@1x": valid, "eval/valid@2x": valid, "eval/valid@4x": valid}


def _values(**arms: list[tuple[float, float, float]]) -> dict:
    return {a: {s + 1: _lengths(*lens) for s, lens in enumerate(rows)}
            for a, rows in arms.items()}


def test_rule_worked_example_of_its_docstring() -> None:
    v = _values(eos=[(1, 1, 0.6), (1, 1, 3.1), (1, 1, 3.3)], k1=[(1, 1, 1)] * 3, k3=[(3, 3, 3)] * 3,
                k7=[(8.0, 7.5, 8.9)] * 3)
    crits = {c.name: c for c in rainbow_lengths(v, [1, 2, 3])}
    assert not crits["eos collapses at 4x"].passed and "2/3 seeds" in crits["eos collapses at 4x"].detail
    assert crits["k1 collapses at 4x"].passed
    assert crits["k7 stays flat"].passed and crits["k7 stays long"].passed and crits["k7 answers are valid"].passed
    assert crits["K orders the arms"].passed


def test_rule_fails_each_robustness_criterion_on_its_own() -> None:
    base = dict(eos=[(1, 1, 1)] * 2, k1=[(1, 1, 1)] * 2, k3=[(3, 3, 3)] * 2)
    crits = {c.name: c.passed for c in rainbow_lengths(_values(**base, k7=[(8, 8, 9.3)] * 2), [1, 2])}
    assert not crits["k7 stays flat"] and crits["k7 stays long"]  # 9.3 is 16 % above 8
    crits = {c.name: c.passed for c in rainbow_lengths(_values(**base, k7=[(4.8, 4.8, 4.8)] * 2), [1, 2])}
    assert crits["k7 stays flat"] and not crits["k7 stays long"]  # 4.8 < 0.75 × 6.5
    crits = {c.name: c.passed for c in rainbow_lengths(_values(**base, k7=[(2, 2, 2)] * 2), [1, 2])}
    assert not crits["K orders the arms"]  # k3 (3) > k7 (2)


def test_plan_skips_finished_jobs_continues_interrupted_ones_and_starts_retrofits_from_their_arm(tmp_path: Path
                                                                                                 ) -> None:
    study = load_study(STUDY)
    _job(tmp_path, "eos", 1, {"x": 1.0})
    _job(tmp_path, "eos", 2, None, ckpt=True)
    launches = plan(study, tmp_path, [1, 2, 3], ["trainer.max_steps=10"], arms=["eos", "retrofit"])
    eos = [la for la in launches if la.arm == "eos"]
    assert [la.seeds for la in eos] == [[2], [3]]
    assert f"ckpt_path={job_dir(tmp_path, 'eos', 2)}" in eos[0].argv  # continues its own run dir
    assert "--multirun" in eos[1].argv and "seed=3" in eos[1].argv and "trainer.max_steps=10" in eos[1].argv
    retro = [la for la in launches if la.arm == "retrofit"]
    assert [la.seeds for la in retro] == [[1], [2], [3]] and launches[-1].arm == "retrofit"
    assert f"ckpt_path={job_dir(tmp_path, 'eos', 1)}/checkpoints/last.ckpt" in retro[0].argv
    assert "experiment=rainbow/lengths_retrofit" in retro[0].argv



def test_a_two_stage_job_is_done_only_when_its_second_stage_metrics_are_in(tmp_path: Path) -> None:
    """A stopped GRPO stage (stage 1's metrics.json already written) is continued, not counted as finished."""
    d = job_dir(tmp_path, "grpo", 1)
    (d / "finetune" / "checkpoints").mkdir(parents=True)
    (d / "finetune" / "checkpoints" / "last.ckpt").write_text("x")
    (d / "config_resolved.yaml").write_text("finetune:\n  method: grpo\n")
    (d / "metrics.json").write_text(json.dumps({"arith/acc": 0.3}))
    assert job_state(d) == "interrupted"
    (d / "metrics.json").write_text(json.dumps({"arith/acc": 0.3, "finetune/arith/acc": 0.4}))
    assert job_state(d) == "done"
    one = job_dir(tmp_path, "eos", 1)  # a one-stage job: its metrics.json is the end
    (one / "checkpoints").mkdir(parents=True)
    (one / "config_resolved.yaml").write_text("trainer:\n  max_steps: 5\n")
    (one / "metrics.json").write_text(json.dumps({"x": 1.0}))
    assert job_state(one) == "done"

def test_report_table_pairs_and_verdict_from_run_dirs(tmp_path: Path) -> None:
    for s in (1, 2):
        _job(tmp_path, "eos", s, _lengths(1.0, 0.8, 0.5 + s))
        _job(tmp_path, "k1", s, _lengths(1.0, 1.0, 1.0))
        _job(tmp_path, "k3", s, _lengths(3.0, 3.0, 3.0))
        _job(tmp_path, "k7", s, _lengths(8.0, 8.0, 8.0 + s / 10))
    _job(tmp_path, "retrofit", 1, {"finetune/eval/len@4x": 5.0})  # reported, not judged; seed 2 missing
    study = load_study(STUDY)
    values, missing = collect(study, tmp_path, [1, 2])
    assert values["retrofit"][1]["eval/len@4x"] == 5.0 and missing == ["retrofit seed 2: not run"]
    assert paired(values, "k7", "eos", "eval/len@4x", [1, 2]) == pytest.approx({1: 6.6, 2: 5.7})
    assert paired(values, "retrofit", "eos", "eval/len@4x", [1, 2]) == pytest.approx({1: 5.0 - 1.5})  # seed 2 missing
    word, text = report(study, tmp_path, [1, 2])
    assert word == "reproduced"
    assert "| eos | 1 | 6.5 | 1 | 0.8 | 1.5 |" in text
    assert "| k7 − eos: eval/len@4x | 6.6 | 5.7 | 6.15 ± 0.636 |" in text
    assert "- [x] **eos collapses at 4x**" in text and "Missing jobs (not counted): retrofit seed 2" in text
    assert (tmp_path / "rainbow_lengths.png").is_file()
    _job(tmp_path, "k7", 3, None)
    word, text = report(study, tmp_path, [1, 2, 3])
    assert word == "incomplete" and "k7 seed 3: no metrics.json" in text


def test_bad_study_and_command_line_are_one_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(StudyError, match="no study 'nope'"):
        load_study("nope")
    bad = tmp_path / "s.yaml"
    bad.write_text("name: s\nseeds: [1]\narms: {a: [x=1]}\nmetrics: [m]\nrule: {_target_: f}\nexperimant: e\n")
    with pytest.raises(StudyError, match="unknown keys \\['experimant'\\]"):
        load_study(str(bad))
    with pytest.raises(StudyError, match="seeds=\\[a\\]"):
        parse_seeds("[a]")
    assert parse_seeds("[4, 5]") == [4, 5]
    with pytest.raises(StudyError, match="neither seeds"):
        main([STUDY, "oops", "--judge", "--out", str(tmp_path)])


def test_beats_by_margins_worked_example() -> None:
    from src.reproduce.rules import beats_by_margins

    v = {"skillit": {1: {"a": 0.80}, 2: {"a": 0.84}}, "stratified": {1: {"a": 0.79}, 2: {"a": 0.81}},
         "random": {1: {"a": 0.78}, 2: {"a": 0.78}}}
    crits = beats_by_margins(v, [1, 2], arm="skillit", metric="a", margins={"stratified": 2, "random": 5},
                             scale=100)
    assert [c.passed for c in crits] == [True, False]
    assert "difference +2.0" in crits[0].detail and "per seed: +2.0, +6.0" in crits[1].detail


def test_equal_docs_reads_the_deterministic_curve_at_the_stochastok_runs_problem_count() -> None:
    from src.reproduce.rules import equal_docs, value_at

    det_x, det_y = [(10, 1000.0), (20, 2000.0)], [(10, 0.40), (20, 0.80)]
    assert value_at(det_x, det_y, 1500) == pytest.approx(0.60) and value_at(det_x, det_y, 2500) is None
    values = {"p03": {s: {"acc": a, "char": a} for s, a in ((1, 0.55), (2, 0.61), (3, 0.58))},
              "p0": {s: {} for s in (1, 2, 3)}}
    curves = {"p0": {s: {"train/docs_seen": det_x, "acc": det_y} for s in (1, 2, 3)},
              "p03": {s: {"train/docs_seen": [(15, 1500.0), (30, 2500.0)],  # the 2nd is past p0's range: left out
                          "acc": [(15, values["p03"][s]["acc"]), (30, 0.9)]} for s in (1, 2, 3)}}
    crits = equal_docs(values, [1, 2, 3], curves=curves, stoch="p03", det="p0", metric="acc", robust_metric="char")
    assert "mean difference -2.0 ± 3.0" in crits[0].detail and crits[0].passed  # d = -5, +1, -2
    assert crits[1].passed
    values["p03"][2]["char"] = 0.50  # 11 points below its training tokenization in seed 2
    assert not equal_docs(values, [1, 2, 3], curves=curves, stoch="p03", det="p0", metric="acc",
                          robust_metric="char")[1].passed


def test_paired_wins_worked_example() -> None:
    from src.reproduce.rules import paired_wins

    seeds = [1, 2, 3, 4, 5]
    cdpo = [0.800, 0.810, 0.820, 0.830, 0.840]
    v = {"cdpo": {s: {"a": c} for s, c in zip(seeds, cdpo)},
         "shuffled": {s: {"a": c - d / 100} for s, c, d in zip(seeds, cdpo, (1.2, 0.4, 2.0, 1.0, 3.1))},
         "dpo": {s: {"a": c - d / 100} for s, c, d in zip(seeds, cdpo, (0.5, 0.0, -0.3, 2.0, 0.1))}}
    crits = paired_wins(v, seeds, arm="cdpo", metric="a", margins={"shuffled": 1, "dpo": 0}, min_seeds=4, scale=100)
    assert [c.passed for c in crits] == [True, False]
    assert "wins in 4 of 5" in crits[0].detail and "wins in 3 of 5" in crits[1].detail


def test_arms_that_read_one_recipe_run_train_nothing_and_read_their_stage(tmp_path: Path) -> None:
    """cdpo_controls: one recipe run per seed holds every arm's metrics under the arm's stage prefix."""
    study = load_study("cdpo_controls")
    launches = plan(study, tmp_path, [1, 2], [])
    assert [la.arm for la in launches] == ["cdpo"] and "seed=1,2" in launches[0].argv
    for s in (1, 2):
        _job(tmp_path, "cdpo", s, {f"{arm}/arith/acc": acc + s / 100 for arm, acc in
                                   (("sft", 0.70), ("dpo", 0.71), ("cdpo", 0.75), ("shuffled", 0.72),
                                    ("constant", 0.73))})
    values, missing = collect(study, tmp_path, [1, 2])
    assert not missing and values["shuffled"][2]["arith/acc"] == pytest.approx(0.74)
    assert paired(values, "cdpo", "shuffled", "arith/acc", [1, 2]) == pytest.approx({1: 0.03, 2: 0.03})
    word, text = report(study, tmp_path, [1, 2])
    assert word == "not reproduced"  # 2 seeds win, the rule asks for 4
    assert "| cdpo − shuffled: arith/acc (points) | 3 | 3 |" in text
    assert (tmp_path / "cdpo_controls.png").is_file()


def test_a_job_arm_must_read_an_arm_that_trains(tmp_path: Path) -> None:
    bad = tmp_path / "s.yaml"
    bad.write_text("experiment: x\nseeds: [1]\nmetrics: [m]\nrule: {_target_: f}\n"
                   "arms:\n  a: {job: b}\n  b: {job: a}\n")
    with pytest.raises(StudyError, match="arm a reads the runs of arm 'b'"):
        load_study(str(bad))


def test_d3s_budget_worked_example() -> None:
    from src.reproduce.rules import d3s_budget

    seeds = [1, 2, 3]
    values = {"none": {s: {"acc": 0.50, "tok": 1000.0} for s in seeds}, "sft": {s: {"acc": 0.40} for s in seeds},
              "d3s": {s: {"acc": 0.50 + d / 100} for s, d in zip(seeds, (2, 3, 1))},
              "random": {s: {"acc": 0.50} for s in seeds}}
    reach = {1: 450.0, 2: 700.0, 3: None}
    curves = {"d3s": {s: {"tok": [(10, 300.0), (20, reach[s] or 800.0), (30, 1000.0)],
                          "acc": [(10, 0.45), (20, 0.50 if reach[s] else 0.48), (30, 0.49 if not reach[s] else 0.52)]}
                      for s in seeds}}
    crits = d3s_budget(values, seeds, curves=curves, d3s="d3s", grpo="none", random="random", base="sft",
                       metric="acc", tokens="tok")
    assert [c.passed for c in crits] == [True, False, True]
    assert "seed 1: 45% (target 50.0); seed 2: 70% (target 50.0); seed 3: never" in crits[1].detail
    assert "mean +2.0 ± 1.0 points" in crits[2].detail
    values["none"][2]["acc"] = 0.44  # seed 2 gains 4 points only: mean gain (10 + 4 + 10) / 3 = 8.0 still holds
    assert d3s_budget(values, seeds, curves=curves, d3s="d3s", grpo="none", random="random", base="sft",
                      metric="acc", tokens="tok")[0].passed


def test_task_curves_logged_at_the_update_count_move_to_the_generation_batch_axis() -> None:
    """The worked example of `on_logger_axis`: 400 updates over 200 generation batches (2 PPO epochs); a run of the
    new logging (accuracy already per batch, its last point at 200) passes through unchanged."""
    metrics = {"finetune/steps": 400, "finetune/train/generation_batches": 200.0}
    old = {"arith/acc": [(50, 0.3), (250, 0.4), (400, 0.5)], "train/backprop_tokens": [(0, 1.0), (199, 9.0)]}
    moved = on_logger_axis(old, metrics, "finetune/")
    assert moved["arith/acc"] == [(24, 0.3), (124, 0.4), (199, 0.5)]
    assert moved["train/backprop_tokens"] == old["train/backprop_tokens"]
    new = {"arith/acc": [(24, 0.3), (200, 0.5)], "train/backprop_tokens": [(0, 1.0), (199, 9.0)]}
    assert on_logger_axis(new, metrics, "finetune/") == new
    assert on_logger_axis(old, {"steps": 400}, "") == old  # not an RL stage: nothing to move


def test_reach_budget_reads_each_arms_first_evaluation_at_the_full_runs_final_accuracy(tmp_path: Path) -> None:
    """scripts/reach_budget.py on two hand-made RL jobs of 6 generation batches, evaluated after batches 2, 4, 6:
    the full run (100 tokens a batch, final accuracy 0.5) and a down-sampled one (50 a batch) that reaches 0.5 at
    its second evaluation: 200 of the full run's 600 tokens, after batch 4, 4 × 30 s."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("reach", Path(__file__).parents[1] / "scripts/reach_budget.py")
    reach = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(reach)
    for arm, per_batch, accs in (("full", 100, (0.4, 0.45, 0.5)), ("cheap", 50, (0.45, 0.5, 0.5))):
        d = job_dir(tmp_path, arm, 1) / "finetune" / "csv"
        d.mkdir(parents=True)
        rows = ["step,arith/acc,train/backprop_tokens,train/train_seconds"]
        rows += [f"{b},,{(b + 1) * per_batch},{(b + 1) * 30}" for b in range(6)]
        rows += [f"{b},{a},," for b, a in zip((1, 3, 5), accs)]
        (d / "metrics.csv").write_text("\n".join(rows) + "\n")
        (d.parent.parent / "metrics.json").write_text(json.dumps({
            "finetune/arith/acc": accs[-1], "finetune/train/backprop_tokens": 6 * per_batch}))
    args = ("finetune", "arith/acc", "train/backprop_tokens", "train/train_seconds")
    assert reach.reach(tmp_path, "cheap", "full", 1, *args) == "33% (batch 4, 2 min)"
    assert reach.reach(tmp_path, "full", "full", 1, *args) == "100% (batch 6, 3 min)"
    assert reach.reach(tmp_path, "missing", "full", 1, *args) == "—"
