"""Layer 1: every module under src/ imports, and every import respects the design's layering (docs/design.md).

The layering test reads imports from the source (AST), so an import inside a function counts as much as one at the
top of a file: a lazy import hides a dependency from Python's import order, not from this test.
"""

from __future__ import annotations

import ast
import importlib
import pkgutil
from dataclasses import dataclass
from pathlib import Path

import pytest

import src

MODULES = sorted(m.name for m in pkgutil.walk_packages(src.__path__, prefix="src."))
ROOT = Path(src.__path__[0]).parent
LOW_ROOMS = ("data", "models", "losses", "kernels")


def test_there_are_modules_to_import() -> None:
    assert {"src.models.lm", "src.kernels.dispatch", "src.runtime.run", "src.recipes.finetune"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_module_imports(name: str) -> None:
    importlib.import_module(name)


@dataclass(frozen=True)
class Rule:
    """Files (globs from the repository root) and what they may import: never a module under `forbidden`; when
    `only` is given, no `src` module outside it."""

    why: str
    files: tuple[str, ...]
    forbidden: tuple[str, ...] = ()
    only: tuple[str, ...] | None = None
    exclude: tuple[str, ...] = ()


RULES = {
    "low rooms never import runtime, callbacks or recipes": Rule(
        "data, models, losses and kernels are used by the runtime, callbacks and recipes, never the other way",
        tuple(f"src/{room}/**/*.py" for room in LOW_ROOMS),
        forbidden=("src.runtime", "src.callbacks", "src.recipes"),
    ),
    "kernels import no losses, models or data": Rule(
        "kernels are the bottom room: hidden states and weights in, per-token log-probs out",
        ("src/kernels/**/*.py",), forbidden=("src.losses", "src.models", "src.data"),
    ),
    "losses import kernels only": Rule(
        "losses are pure functions: tensors in, tensors out", ("src/losses/**/*.py",),
        only=("src.losses", "src.kernels"),
    ),
    "data imports nothing of models": Rule(
        "a data module feeds any objective", ("src/data/**/*.py",), forbidden=("src.models",),
    ),
    "models import nothing of data": Rule(
        "an objective trains on any data module that keeps the batch contract (docs/contracts.md)",
        ("src/models/**/*.py",), forbidden=("src.data",),
    ),
    "rewards import data task checkers only": Rule(
        "a reward scores text; objectives receive it built from the config (reward=) and never import it",
        ("src/rewards/**/*.py",), only=("src.rewards", "src.data"),
    ),
    "models import no rewards": Rule(
        "GRPO calls whatever reward the config built; a model importing rewards would pull in data",
        ("src/models/**/*.py",), forbidden=("src.rewards",),
    ),
    "the pretrained-asset leaf imports no other src room": Rule(
        "src/assets sits below both data and models", ("src/assets/**/*.py",), only=("src.assets",),
    ),
    "plots import no other src room": Rule(
        "plots draw the numbers they are given, for callbacks and results scripts alike", ("src/plots/**/*.py",),
        only=("src.plots",),
    ),
    "runtime primitives import no recipe": Rule(
        "recipes are built from the runtime's primitives; only run.py, the top, picks a recipe",
        ("src/runtime/**/*.py",), forbidden=("src.recipes",), exclude=("src/runtime/run.py",),
    ),
    "report, reproduce and export are top-level tools nothing imports": Rule(
        "they read finished run dirs and checkpoints; training never depends on them", ("src/**/*.py",),
        forbidden=("src.report", "src.export", "src.reproduce"),
        exclude=tuple(str(p.relative_to(ROOT)) for d in ("report", "export", "reproduce")
                      for p in (ROOT / "src" / d).glob("*.py")),
    ),
    "reproduce runs train.py as a program and reads run dirs": Rule(
        "a study launches train.py in a subprocess and judges run dirs; it never imports the training code",
        ("src/reproduce/**/*.py",), only=("src.reproduce", "src.report", "src.plots"),
    ),
    "report reads run dirs, not the training code": Rule(
        "a report must work on run dirs of any version of the code", ("src/report/**/*.py",),
        only=("src.report", "src.plots"),
    ),
    "recipes do not import the top of the runtime": Rule(
        "run.py calls the recipes, so a recipe importing it would close a circle", ("src/recipes/**/*.py",),
        forbidden=("src.runtime.run",),
    ),
    "nothing imports train.py": Rule(
        "train.py is the Hydra entry point; importing it would run Hydra's set-up",
        ("src/**/*.py", "scripts/**/*.py", "bench/**/*.py", "tests/**/*.py"), forbidden=("train",),
    ),
}


def _type_checking_only(tree: ast.AST) -> set[int]:
    """ids of the import nodes inside `if TYPE_CHECKING:` blocks (annotations only: never run)."""
    out: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", getattr(node.test, "attr", None)) == "TYPE_CHECKING":
            out |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    return out


def imported_modules(path: Path, runtime_only: bool = False) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in a file, at any depth (functions, branches, try blocks).
    `from x import y` gives both `x` and `x.y` (y may be a submodule); relative imports are made absolute.
    `runtime_only`: leave out imports under `if TYPE_CHECKING:` (they never execute)."""
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    found = []
    tree = ast.parse(path.read_text(), filename=str(path))
    skip = _type_checking_only(tree) if runtime_only else set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            found.append((node.lineno, base))
            found += [(node.lineno, f"{base}.{a.name}") for a in node.names if a.name != "*"]
    return found


def _under(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


@pytest.mark.parametrize("rule", list(RULES), ids=list(RULES))
def test_layering(rule: str) -> None:
    r = RULES[rule]
    files = sorted({p for pattern in r.files for p in ROOT.glob(pattern)} - {ROOT / e for e in r.exclude})
    assert files, f"rule {rule!r} matches no file: {r.files}"
    offences: dict[tuple[str, int], str] = {}  # (file, line) -> the import, named once per statement
    for path in files:
        for line, module in imported_modules(path):
            if _under(module, r.forbidden) or (
                r.only is not None and _under(module, ("src",)) and not _under(module, r.only)
            ):
                offences.setdefault((str(path.relative_to(ROOT)), line), module)
    report = [f"  {f}:{line} imports {m}" for (f, line), m in sorted(offences.items())]
    assert not report, f"layering rule broken: {rule} ({r.why}):\n" + "\n".join(report)


def import_cycles() -> list[list[str]]:
    """The import circles among src modules (strongly connected components of more than one module), from the
    source's imports at any depth (a lazy import inside a function closes a circle as much as a top-level one;
    `if TYPE_CHECKING:` imports never run and are left out)."""
    names = set(MODULES)
    graph: dict[str, set[str]] = {}
    for name in MODULES:
        path = ROOT / Path(*name.split("."))
        path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
        found = imported_modules(path, runtime_only=True)
        graph[name] = {m for line, m in found if m in names and m != name
                       # Python initialises a module's parent packages before it, so an edge to one's own parent
                       # is no circle; nor is `from pkg import submodule`, which needs pkg.submodule, not pkg
                       and not name.startswith(m + ".")
                       and not any(o.startswith(m + ".") and o in names for ln, o in found if ln == line)}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's algorithm
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles


def test_no_import_circle_in_src() -> None:
    """A circle makes import order matter (a partly initialised module) and ties layers that should stand alone;
    the data rooms once held formats/base -> stochastok -> tokenized -> sources -> formats/registry -> base."""
    cycles = import_cycles()
    assert not cycles, "import circles in src/: " + "; ".join(" <-> ".join(c) for c in cycles)


def test_the_circle_finder_finds_a_lazy_circle(tmp_path: Path) -> None:
    """The finder itself: a circle closed by an import inside a function is found."""
    global MODULES, ROOT
    saved = MODULES, ROOT
    pkg = tmp_path / "src"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from src.b import f\n")
    (pkg / "b.py").write_text("def f():\n    from src.a import g\n")
    (pkg / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from src.a import g\n")
    try:
        MODULES, ROOT = ["src", "src.a", "src.b", "src.c"], tmp_path
        assert import_cycles() == [["src.a", "src.b"]]
    finally:
        MODULES, ROOT = saved
