"""`make install` (scripts/install.sh): with the package index unreachable, set-up stops with one clear line naming
the failed step and the log, not pip's traceback."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.helpers import ROOT


def test_unreachable_package_index_gives_one_clear_line(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    env = {**os.environ, "PIP_INDEX_URL": "http://127.0.0.1:9/simple", "PIP_FIND_LINKS": "", "PIP_RETRIES": "0",
           "PIP_DEFAULT_TIMEOUT": "2", "PIP_NO_CACHE_DIR": "1"}
    proc = subprocess.run(["bash", "scripts/install.sh", str(venv), "dev", "-c", "constraints.txt"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1
    errors = [line for line in proc.stderr.splitlines() if line.strip()]
    assert errors[0].startswith("set-up failed while ") and str(venv / "install.log") in errors[0]
    assert len(errors) <= 2 and "Traceback" not in proc.stderr
    assert (venv / "install.log").read_text().strip()  # pip's own output is kept for whoever needs it


def test_changing_extras_or_constraints_reruns_set_up(tmp_path: Path) -> None:
    """The set-up stamp covers EXTRAS, GPU and CONSTRAINTS: `make install EXTRAS=dev` after a full set-up installs
    again (it was a silent no-op), and the same settings twice stay a no-op. `make -n` only prints the commands."""
    venv = tmp_path / "venv"

    def plan(*args: str) -> str:
        return subprocess.run(["make", "-n", "install", f"VENV={venv}", *args], cwd=ROOT, capture_output=True,
                              text=True, timeout=60, check=True).stdout

    assert "scripts/install.sh" in plan()
    (venv / ".tokensmith-installed").touch()  # as if that set-up had finished
    assert "scripts/install.sh" not in plan()
    assert f"scripts/install.sh {venv} dev " in plan("EXTRAS=dev")
    (venv / ".tokensmith-installed").touch()
    assert "scripts/install.sh" not in plan("EXTRAS=dev")
    assert "scripts/install.sh" in plan("CONSTRAINTS=")
