"""scripts/skillit_results.py: the table and the target check that a LEGO sweep is judged by."""

from __future__ import annotations

import importlib.util
import sys

from tests.helpers import ROOT

_spec = importlib.util.spec_from_file_location("skillit_results", ROOT / "scripts" / "skillit_results.py")
results = importlib.util.module_from_spec(_spec)
sys.modules["skillit_results"] = results
_spec.loader.exec_module(results)


def _run(seed: int, half: list[float], end: list[float]) -> dict:
    return {"seed": seed, "skills": [f"skill{i + 1}" for i in range(len(end))], "mixtures": [],
            "evals": [{"step": 0, "acc": [0.0] * len(end)}, {"step": 300, "acc": half}, {"step": 600, "acc": end}]}


def test_target_check_reads_all_three_conditions_at_equal_steps() -> None:
    runs = {
        "random": [_run(s, [0.5] * 3, [1.0, 0.5, 0.5]) for s in (1, 2)],  # 66.7 % at the end
        "stratified": [_run(s, [0.6] * 3, [0.95] * 3) for s in (1, 2)],
        "skillit": [_run(s, [0.8] * 3, [0.95, 0.92, 0.99]) for s in (1, 2)],
    }
    check = results.target_check(runs)
    assert "step 600, half = step 300" in check
    assert ("- skillit: learns every skill: yes (lowest skill 92.0 %); ahead of stratified at half: yes "
            "(80.0 vs 60.0 %); >= 20 points over random at the end: yes (95.3 vs 66.7 %)") in check
    runs["skillit"] = [_run(s, [0.5] * 3, [1.0, 0.89, 0.7]) for s in (1, 2)]
    check = results.target_check(runs)
    assert "learns every skill: no (lowest skill 70.0 %)" in check
    assert "ahead of stratified at half: no" in check and "over random at the end: no" in check
    assert results.target_check({"random": runs["random"], "skillit": runs["skillit"]}) == ""  # no stratified


def test_table_has_one_row_per_curriculum_with_seed_means() -> None:
    runs = {"random": [_run(1, [0.5] * 2, [1.0, 0.5]), _run(2, [0.5] * 2, [0.8, 0.5])]}
    table = results.table(runs)
    assert "| curriculum | seeds | skill1 | skill2 | mean (end) | mean (half, step 300) |" in table
    assert "| random | 2 | 90.0 ± 10.0 | 50.0 ± 0.0 | **70.0** ± 5.0 | 50.0 ± 0.0 |" in table


def test_runs_stopped_at_a_deadline_are_compared_at_the_step_all_reached() -> None:
    """A lent GPU's budget can stop some jobs early: their skills.json ends at an earlier evaluation. Every run is
    then cut at that step, so the table never compares one run's step 600 with another's step 300."""
    done = _run(1, [0.5] * 2, [1.0, 1.0])
    stopped = {**_run(2, [0.5] * 2, [0.9, 0.9]), "finished": False}
    stopped["evals"] = stopped["evals"][:2]  # stopped after its step-300 evaluation
    stopped["dir"], done["dir"] = "seed-2", "seed-1"
    runs = {"random": [done, stopped]}
    note = results.truncate_to_common(runs)
    assert note == "note: 1 of 2 runs stopped before their end (last evaluations at steps 300-600); every run is " \
                   "compared at step 300."
    assert "| random | 2 | 50.0 ± 0.0 | 50.0 ± 0.0 | **50.0** ± 0.0 |" in results.table(runs)
    finished = {"random": [_run(1, [0.5] * 2, [1.0, 1.0])]}
    assert results.truncate_to_common(finished) == "" and finished["random"][0]["evals"][-1]["step"] == 600
