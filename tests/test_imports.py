"""Layer 1: every module under src/ imports (catches syntax errors and broken cross-room imports)."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import src

MODULES = sorted(m.name for m in pkgutil.walk_packages(src.__path__, prefix="src."))


def test_there_are_modules_to_import() -> None:
    assert {"src.models.lm", "src.kernels.dispatch", "src.runtime.run"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_module_imports(name: str) -> None:
    importlib.import_module(name)


def test_data_room_does_not_import_models() -> None:
    """Design rule: `data` imports nothing of `models`, `losses` imports only `kernels`."""
    import ast
    from pathlib import Path

    root = Path(src.__path__[0])
    offences = []
    for room, forbidden in {"data": ("src.models",), "losses": ("src.models", "src.data", "src.runtime")}.items():
        for path in (root / room).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                mods = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                    [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
                offences += [f"{path}: {m}" for m in mods if m.startswith(forbidden)]
    assert offences == []
