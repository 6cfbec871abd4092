"""Fixtures shared by every test directory."""

from __future__ import annotations

import os
from pathlib import Path

# Triton picks interpreter or compiler when a @triton.jit function is *created*; any module imported by an
# earlier test (DeepSpeed, our kernels) may create some. Choose once, before anything imports triton: the
# interpreter unless a GPU run asks for compiled kernels (TOKENSMITH_TRITON_CUDA=1, see tests/kernels/).
if os.environ.get("TOKENSMITH_TRITON_CUDA") != "1":
    os.environ.setdefault("TRITON_INTERPRET", "1")

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
