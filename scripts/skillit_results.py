"""Aggregate a Skill-It multirun into a markdown table and plots (docs/results.md, docs/img/skillit_*.png).

    python scripts/skillit_results.py outputs/skillit_lego/multiruns/<name> [<more multirun dirs>] \
        --img docs/img --prefix skillit_lego

Reads each job's config_resolved.yaml (curriculum, seed) and skills.json (per-skill evals, mixtures); prints the
table (mean ± std over seeds of per-skill accuracy at half and at the end) and writes the plots. Runs stopped before
their end (skills.json is written at every evaluation; `"finished": false`) are compared at the last step every run
reached, and the output says so.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import yaml


def _eta(cfg: dict) -> float | None:
    return (cfg["curriculum"].get("callback") or {}).get("eta")


def _graph(cfg: dict) -> str:
    """`spec` (the data config's graph), `inline`, or the directory holding a learned skills_graph.yaml."""
    graph = (cfg["curriculum"].get("callback") or {}).get("graph")
    if graph is None:
        return "spec"
    return Path(graph).parent.name if isinstance(graph, str) else "inline"


def load(multiruns: list[Path]) -> dict[str, list[dict]]:
    """Jobs of one or more multirun directories, grouped by curriculum; Skill-It runs with different η or graphs
    (e.g. several sweeps) are told apart as `skillit η=... graph=...`."""
    jobs = []
    for multirun in multiruns:
        for job in sorted(p for p in multirun.iterdir() if (p / "skills.json").is_file()):
            cfg = yaml.safe_load((job / "config_resolved.yaml").read_text())
            data = json.loads((job / "skills.json").read_text())
            if data["evals"]:  # a job stopped before its first evaluation has nothing to compare
                jobs.append((cfg, job, data))
    skillit = [cfg for cfg, _, _ in jobs if cfg["curriculum"]["name"] == "skillit"]
    etas, graphs = {_eta(c) for c in skillit}, {_graph(c) for c in skillit}
    runs: dict[str, list[dict]] = defaultdict(list)
    for cfg, job, data in jobs:
        name = cfg["curriculum"]["name"]
        if name == "skillit":
            name += f" η={_eta(cfg)}" if len(etas) > 1 else ""
            name += f" graph={_graph(cfg)}" if len(graphs) > 1 else ""
        runs[name].append({"seed": cfg["seed"], "dir": job.name, **data})
    return runs


def truncate_to_common(runs: dict[str, list[dict]]) -> str:
    """Cut every run's history at the last evaluation step all runs reached, so that a run stopped at a deadline
    is compared with the others at equal steps (and its mixture plot ends there too). Returns a note, or ''."""
    ends = [r["evals"][-1]["step"] for rs in runs.values() for r in rs]
    stopped = [r["dir"] for rs in runs.values() for r in rs if r.get("finished") is False]
    common = min(ends)
    if not stopped and common == max(ends):
        return ""
    for rs in runs.values():
        for r in rs:
            r["evals"] = [e for e in r["evals"] if e["step"] <= common]
            r["mixtures"] = [m for m in r["mixtures"] if m["step"] <= common] or r["mixtures"][:1]
    return (f"note: {len(stopped)} of {len(ends)} runs stopped before their end (last evaluations at steps "
            f"{min(ends)}-{max(ends)}); every run is compared at step {common}.")


def at_step(evals: list[dict], step: int) -> dict:
    return min(evals, key=lambda e: abs(e["step"] - step))


def half_step(runs: dict[str, list[dict]], last: int) -> int:
    """The evaluation step nearest to last / 2 (the step the "half" columns really report: with evaluations every
    250 steps and last = 1750, that is 750, not 875)."""
    return at_step(next(iter(runs.values()))[0]["evals"], last // 2)["step"]


def table(runs: dict[str, list[dict]]) -> str:
    names = next(iter(runs.values()))[0]["skills"]
    last = max(r["evals"][-1]["step"] for rs in runs.values() for r in rs)
    mid = half_step(runs, last)
    head = "| curriculum | seeds | " + " | ".join(names) + f" | mean (end) | mean (half, step {mid}) |"
    lines = [head, "|" + "---|" * (len(names) + 4)]
    for cur, rs in runs.items():
        end = np.array([at_step(r["evals"], last)["acc"] for r in rs]) * 100  # [seeds, k]
        half = np.array([at_step(r["evals"], mid)["acc"] for r in rs]) * 100
        cells = [f"{m:.1f} ± {s:.1f}" for m, s in zip(end.mean(0), end.std(0))]
        lines.append(f"| {cur} | {len(rs)} | " + " | ".join(cells)
                     + f" | **{end.mean(1).mean():.1f}** ± {end.mean(1).std():.1f}"
                     + f" | {half.mean(1).mean():.1f} ± {half.mean(1).std():.1f} |")
    return "\n".join(lines) + f"\n\nGreedy answer accuracy (%) at step {last}, mean ± std over seeds."


def target_check(runs: dict[str, list[dict]], learned: float = 90.0) -> str:
    """The paper's direction as three yes/no lines (the #5 target): Skill-It learns every skill (each skill's
    seed-mean accuracy >= `learned` % at the end), is ahead of stratified at half the steps, and is >= 20 points
    over random at the end; all at equal steps. Empty unless random, stratified and a Skill-It run are present."""
    skillit = [c for c in runs if c.startswith("skillit")]
    if "random" not in runs or "stratified" not in runs or not skillit:
        return ""
    last = max(r["evals"][-1]["step"] for rs in runs.values() for r in rs)

    def mean_acc(cur: str, step: int) -> np.ndarray:  # [k], %
        return np.array([at_step(r["evals"], step)["acc"] for r in runs[cur]]).mean(0) * 100

    mid = half_step(runs, last)
    out = [f"Target check (step {last}, half = step {mid}; 'learned' = each skill >= {learned:.0f} %):"]
    for cur in skillit:
        end, half = mean_acc(cur, last), mean_acc(cur, mid)
        strat_half, rand_end = mean_acc("stratified", mid).mean(), mean_acc("random", last).mean()
        out += [f"- {cur}: learns every skill: {'yes' if end.min() >= learned else 'no'} (lowest skill "
                f"{end.min():.1f} %); ahead of stratified at half: {'yes' if half.mean() > strat_half else 'no'} "
                f"({half.mean():.1f} vs {strat_half:.1f} %); >= 20 points over random at the end: "
                f"{'yes' if end.mean() - rand_end >= 20 else 'no'} ({end.mean():.1f} vs {rand_end:.1f} %)"]
    return "\n".join(out)


def _panels(plt, n: int, height: float, **kw):  # noqa: ANN001, ANN202
    """One panel per curriculum, wrapped at 4 per row; unused grid cells hidden."""
    ncols = min(4, n)
    nrows = -(-n // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, height * nrows), squeeze=False, **kw)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, axes


def plots(runs: dict[str, list[dict]], img: Path, prefix: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    img.mkdir(parents=True, exist_ok=True)
    names = next(iter(runs.values()))[0]["skills"]
    fig, axes = _panels(plt, len(runs), 3.6, sharey=True)
    for ax, (cur, rs) in zip(axes.flat, runs.items()):
        steps = [e["step"] for e in rs[0]["evals"]]
        acc = np.array([[e["acc"] for e in r["evals"]] for r in rs if len(r["evals"]) == len(steps)])  # [S, E, k]
        for i, n in enumerate(names):
            ax.plot(steps, acc[:, :, i].mean(0), "o-", ms=2, label=n)
        ax.set(xlabel="optimizer step", ylim=(0, 1.02))
        ax.set_title(f"{cur} (mean of {len(acc)} seeds)", fontsize=9)
        ax.grid(alpha=0.3)
    for row in axes:
        row[0].set_ylabel("greedy answer accuracy")
    axes.flat[len(runs) - 1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(img / f"{prefix}_accuracy.png", dpi=100)
    plt.close(fig)
    mixing = {c: rs for c, rs in runs.items() if len(rs[0]["mixtures"]) > 1} or runs
    fig, axes = _panels(plt, len(mixing), 3.4)
    for ax, (cur, rs) in zip(axes.flat, mixing.items()):
        r = rs[0]
        end = r["evals"][-1]["step"]
        xs = [m.get("applies_from_step", m["step"]) for m in r["mixtures"]] + [end]
        for i, n in enumerate(names):
            ys = [m["weights"][i] for m in r["mixtures"]]
            ax.step(xs, ys + ys[-1:], where="post", label=n)
        ax.set(xlabel="optimizer step", ylabel="mixture weight", ylim=(0, 1.02))
        ax.set_title(f"{cur} (seed {r['seed']})", fontsize=9)
        ax.grid(alpha=0.3)
    axes.flat[len(mixing) - 1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(img / f"{prefix}_mixture.png", dpi=100)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("multirun", type=Path, nargs="+", help="one or more multirun directories")
    # Plots go next to the runs unless asked for (docs/img holds the committed figures: pass it explicitly).
    ap.add_argument("--img", type=Path, default=None, help="plot directory (default: the first multirun directory)")
    ap.add_argument("--prefix", default="skillit")
    args = ap.parse_args()
    runs = load(args.multirun)
    if not runs:
        raise SystemExit(f"no finished jobs (skills.json) under {', '.join(map(str, args.multirun))}")
    note = truncate_to_common(runs)
    if note:
        print(note + "\n")
    print(table(runs))
    check = target_check(runs)
    if check:
        print("\n" + check)
    img = args.img if args.img is not None else args.multirun[0]
    plots(runs, img, args.prefix)
    print(f"\nplots: {img / (args.prefix + '_accuracy.png')}, {img / (args.prefix + '_mixture.png')}")


if __name__ == "__main__":
    main()
