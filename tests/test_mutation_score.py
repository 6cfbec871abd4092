"""scripts/mutation_score.py without running a mutant: the score read from a cosmic-ray session, the table, and
an unknown module as one error."""

from __future__ import annotations

import importlib.util
import sqlite3
from pathlib import Path

import pytest

from tests.helpers import ROOT

spec = importlib.util.spec_from_file_location("mutation_score", ROOT / "scripts" / "mutation_score.py")
ms = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ms)


def fake_session(path: Path, outcomes: list[tuple[str, str]], pending: int) -> None:
    """A session with cosmic-ray's tables: len(outcomes) + pending mutants, the outcomes recorded."""
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE mutation_specs (job_id TEXT)")
    con.execute("CREATE TABLE work_results (worker_outcome TEXT, output TEXT, test_outcome TEXT, diff TEXT, "
                "job_id TEXT)")
    for i in range(len(outcomes) + pending):
        con.execute("INSERT INTO mutation_specs VALUES (?)", (str(i),))
    for i, (worker, test) in enumerate(outcomes):
        con.execute("INSERT INTO work_results VALUES (?, '', ?, '', ?)", (worker, test, str(i)))
    con.commit()
    con.close()


def test_the_score_counts_killed_over_judged_mutants(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    module = "src/losses/rloo.py"
    fake_session(ms.session(tmp_path, module), [("NORMAL", "KILLED")] * 9 + [("NORMAL", "SURVIVED"),
                 ("ABNORMAL", "INCOMPETENT")], pending=4)
    assert ms.counts(ms.session(tmp_path, module)) == {"killed": 9, "survived": 1, "incompetent": 1, "pending": 4}
    assert ms.main([module, "--report", "--out", str(tmp_path)]) == 0
    assert f"| `{module}` | 15 | 9 | 1 | 1 | 4 | 90.0 % |" in capsys.readouterr().out


def test_an_unknown_module_is_one_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert ms.main(["src/losses/nope.py", "--out", str(tmp_path)]) == 2
    assert "not in the module list" in capsys.readouterr().err


def test_every_listed_module_and_test_exists() -> None:
    missing = [p for m, tests in ms.MODULES.items() for p in (m, *tests) if not (ROOT / p).is_file()]
    assert not missing, missing
