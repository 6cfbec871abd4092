"""Fixtures shared by every test directory."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import tests.helpers  # noqa: F401  (sets the shared cache / offline environment before any test runs)

# `make test` runs two xdist workers on two cores: one intra-op thread each avoids oversubscription, which
# made small-model tests 10x slower in measurements, and keeps float reductions reproducible.
torch.set_num_threads(1)


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    d = tmp_path / "run"
    d.mkdir()
    return d
