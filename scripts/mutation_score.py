"""Mutation testing of the modules where a silent bug changes results (`make mutate`; docs/robustness.md).

    python scripts/mutation_score.py                       # every module below (hours on 2 CPU cores)
    python scripts/mutation_score.py src/losses/rloo.py    # one module (minutes)
    python scripts/mutation_score.py --report              # the table of what has run, nothing new

For each module, cosmic-ray (a maintained mutation tester) plants one small bug at a time (an operator, a
comparison, a constant, a removed statement) and runs only the tests that cover that module (`MODULES`); a
mutant is *killed* when those tests fail. Why cosmic-ray and not mutmut: mutmut 3 refuses a package named `src`
("module name starts with `src.`"), which is this project's layout.

cosmic-ray edits the module in place while a mutant's tests run, so everything runs in a private clone of the
current commit (`<out>/tree`), never in your working tree; sessions (`<out>/<module>.sqlite`) are resumable: a
second call continues where the first stopped (delete a module's session after editing that module: its
mutants are recorded by position). The score is killed / (killed + survived); mutants whose tests
time out count as killed (cosmic-ray's convention), and incompetent ones (the mutant does not even import) are
left out. `--survivors` lists the surviving mutants as diffs, to kill with a new test or mark as equivalent.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable

# module -> the tests that cover it (run for each of its mutants)
MODULES: dict[str, list[str]] = {
    "src/losses/grpo.py": ["tests/losses/test_grpo.py", "tests/models/test_rl_options.py"],
    "src/losses/rloo.py": ["tests/losses/test_rloo.py"],
    "src/losses/d3s.py": ["tests/losses/test_d3s.py"],
    "src/losses/dpo.py": ["tests/losses/test_dpo.py"],
    "src/losses/simpo.py": ["tests/losses/test_simpo.py"],
    "src/losses/critical_tokens.py": ["tests/losses/test_dpo.py"],
    "src/losses/mdlm.py": ["tests/losses/test_mdlm.py"],
    "src/losses/token_ce.py": ["tests/losses/test_token_ce.py"],
    "src/models/token_normaliser.py": ["tests/test_token_normaliser.py"],
    "src/kernels/chunked.py": ["tests/kernels/test_chunked.py"],
    "src/models/downsamplers.py": ["tests/models/test_downsamplers.py", "tests/models/test_grpo_module.py"],
    "src/models/preference_losses.py": ["tests/models/test_dpo_module.py", "tests/models/test_rl_options.py"],
    "src/data/rainbow.py": ["tests/data/test_rainbow.py"],
    "src/data/stochastok.py": ["tests/data/test_stochastok.py"],
    "src/data/skills_graph.py": ["tests/data/test_skills_graph.py", "tests/test_skillit_callback.py"],  # Skill-It
}


def tool(name: str) -> str:
    """A console script installed beside this Python (cosmic-ray, cr-report)."""
    return str(Path(PYTHON).with_name(name))


def session(out: Path, module: str) -> Path:
    return out / (module.replace("/", "_").removesuffix(".py") + ".sqlite")


def counts(db: Path) -> dict[str, int]:
    """killed / survived / incompetent / pending of a cosmic-ray session (read from its sqlite tables)."""
    con = sqlite3.connect(db)
    try:
        total = con.execute("SELECT COUNT(*) FROM mutation_specs").fetchone()[0]
        rows = con.execute("SELECT worker_outcome, test_outcome FROM work_results").fetchall()
    finally:
        con.close()
    out = {"killed": 0, "survived": 0, "incompetent": 0, "pending": total - len(rows)}
    for worker, test in rows:
        if str(worker).endswith("ABNORMAL") or str(worker).endswith("EXCEPTION"):
            out["incompetent"] += 1
        elif str(test).endswith("SURVIVED"):
            out["survived"] += 1
        elif str(test).endswith("INCOMPETENT"):
            out["incompetent"] += 1
        else:  # KILLED, or a timeout
            out["killed"] += 1
    return out


def tree(out: Path) -> Path:
    """A private clone of HEAD to mutate in (recreated when HEAD moved, restored to the commit otherwise)."""
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    path, stamp = out / "tree", out / "tree.commit"
    if not (path.is_dir() and stamp.is_file() and stamp.read_text() == head):
        shutil.rmtree(path, ignore_errors=True)
        subprocess.run(["git", "clone", "-q", str(ROOT), str(path)], check=True)
        subprocess.run(["git", "checkout", "-q", head.strip()], cwd=path, check=True)
        stamp.write_text(head)
    # a run stopped mid-mutant leaves that mutant on disk: restore the commit's files before every run
    subprocess.run(["git", "checkout", "-q", "--", "."], cwd=path, check=True)
    return path


def run(module: str, out: Path, timeout: float) -> None:
    work = tree(out)
    cfg = out / (session(out, module).stem + ".toml")
    tests = " ".join(MODULES[module])
    cfg.write_text(f'[cosmic-ray]\nmodule-path = "{module}"\ntimeout = {timeout}\nexcluded-modules = []\n'
                   f'test-command = "{PYTHON} -m pytest -x -q -p no:cacheprovider {tests}"\n\n'
                   '[cosmic-ray.distributor]\nname = "local"\n')
    db = session(out, module)
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    if not db.is_file():
        subprocess.run([tool("cosmic-ray"), "init", str(cfg), str(db)], cwd=work, check=True, env=env)
    print(f"{module}: {counts(db)['pending']} mutants to run ...", flush=True)
    subprocess.run([tool("cosmic-ray"), "exec", str(cfg), str(db)], cwd=work, check=True, env=env)


def survivors(out: Path, module: str) -> str:
    """cosmic-ray's own report of a session: the surviving mutants only, each with its diff."""
    cmd = [tool("cr-report"), "--surviving-only", "--show-diff", str(session(out, module))]
    return subprocess.run(cmd, capture_output=True, text=True).stdout


def table(out: Path, modules: list[str]) -> str:
    lines = ["| module | mutants | killed | survived | incompetent | pending | score |",
             "|---|---|---|---|---|---|---|"]
    for m in modules:
        db = session(out, m)
        if not db.is_file():
            continue
        c = counts(db)
        judged = c["killed"] + c["survived"]
        score = f"{100 * c['killed'] / judged:.1f} %" if judged else "-"
        lines.append(f"| `{m}` | {sum(c.values())} | {c['killed']} | {c['survived']} | {c['incompetent']} | "
                     f"{c['pending']} | {score} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("modules", nargs="*", help=f"modules to mutate (default: all {len(MODULES)})")
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("TOKENSMITH_OUTPUTS", ROOT / "outputs"))
                    / "mutation", help="sessions and the private clone (default: outputs/mutation)")
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds before a mutant's tests count as killed")
    ap.add_argument("--report", action="store_true", help="print the table of finished work only")
    ap.add_argument("--survivors", action="store_true", help="print cosmic-ray's report (survivors as diffs)")
    a = ap.parse_args(argv)
    unknown = [m for m in a.modules if m not in MODULES]
    if unknown:
        print(f"error: {unknown} not in the module list (scripts/mutation_score.py MODULES): {sorted(MODULES)}",
              file=sys.stderr)
        return 2
    modules = a.modules or list(MODULES)
    a.out.mkdir(parents=True, exist_ok=True)
    if not (a.report or a.survivors):
        for m in modules:
            run(m, a.out, a.timeout)
    print(table(a.out, modules))
    if a.survivors:
        for m in modules:
            if session(a.out, m).is_file():
                print(f"\n## {m}\n{survivors(a.out, m)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
