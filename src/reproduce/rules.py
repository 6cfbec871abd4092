"""The pre-registered criteria, one function per study, as code: `rule(values, seeds, **thresholds)` returns the
criteria (what is required, what was measured, whether it holds); the study is reproduced when all hold.

`values[arm][seed][metric]` holds each finished job's final metrics (an arm's prefix already removed). The
thresholds come from the study file, so the rule a table was judged by is the file committed before its numbers.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence

from src.reproduce.judge import Criterion, Curves, Values


def _count(flags: Sequence[bool]) -> str:
    return f"{sum(flags)}/{len(flags)} seeds"


def rainbow_lengths(values: Values, seeds: list[int], *, collapsing: Sequence[str] = ("eos", "k1"),
                    robust: str = "k7", ordered: Sequence[str] = ("k1", "k3", "k7"),
                    canvases: Sequence[str] = ("1x", "2x", "4x"), at: str = "4x", collapse_max: float = 0.5,
                    flat_tol: float = 0.15, robust_min: float = 0.75, valid_min: float = 0.95,
                    metric_prefix: str = "eval/") -> list[Criterion]:
    """Rainbow Padding's claim on answers of uncertain length (docs/results.md, "Rainbow on answers of uncertain
    length"):

    1. each `collapsing` arm's answers collapse at the largest canvas: len@`at` <= collapse_max × the data's mean
       length (eval/target_len), in every seed;
    2. the `robust` arm stays flat and long with valid answers, in every seed: at every canvas, len within
       ±flat_tol of its len@1x, len >= robust_min × the data's mean length, and valid >= valid_min;
    3. K orders the arms: the seed-mean len@`at` does not decrease along `ordered`.

    Worked example: target_len 6.5, so the collapse bound is 0.5 × 6.5 = 3.25 tokens. eos with len@4x 0.6, 3.1,
    3.3 over three seeds fails criterion 1 (3.3 > 3.25: 2/3 seeds). k7 with len 8.0, 7.5, 8.9 at 1x/2x/4x passes
    flatness (|7.5 − 8.0| = 0.5 and |8.9 − 8.0| = 0.9 are both <= 0.15 × 8.0 = 1.2) and length (7.5 >= 0.75 × 6.5 =
    4.875). tests/test_reproduce.py checks these numbers.
    """
    def v(arm: str, s: int, name: str) -> float:
        return values[arm][s][metric_prefix + name]

    crits = []
    for arm in collapsing:
        ok = [v(arm, s, f"len@{at}") <= collapse_max * v(arm, s, "target_len") for s in seeds]
        got = ", ".join(f"{v(arm, s, f'len@{at}'):.2f}" for s in seeds)
        crits.append(Criterion(f"{arm} collapses at {at}",
                               f"len@{at} <= {collapse_max} × target_len in {_count(ok)} (len@{at}: {got}; "
                               f"target_len {v(arm, seeds[0], 'target_len'):.2f})", all(ok)))
    flat, long_, valid = [], [], []
    for s in seeds:
        base = v(robust, s, "len@1x")
        flat.append(all(abs(v(robust, s, f"len@{c}") - base) <= flat_tol * base for c in canvases) and base > 0)
        long_.append(all(v(robust, s, f"len@{c}") >= robust_min * v(robust, s, "target_len") for c in canvases))
        valid.append(all(v(robust, s, f"valid@{c}") >= valid_min for c in canvases))
    lens = "; ".join("/".join(f"{v(robust, s, f'len@{c}'):.2f}" for c in canvases) for s in seeds)
    vals = "; ".join("/".join(f"{v(robust, s, f'valid@{c}'):.2f}" for c in canvases) for s in seeds)
    crits.append(Criterion(f"{robust} stays flat", f"every canvas within ±{flat_tol:.0%} of len@1x in "
                           f"{_count(flat)} (len@{'/'.join(canvases)} per seed: {lens})", all(flat)))
    crits.append(Criterion(f"{robust} stays long", f"len >= {robust_min} × target_len at every canvas in "
                           f"{_count(long_)}", all(long_)))
    crits.append(Criterion(f"{robust} answers are valid", f"valid >= {valid_min:.0%} at every canvas in "
                           f"{_count(valid)} (valid@{'/'.join(canvases)} per seed: {vals})", all(valid)))
    means = [statistics.fmean(v(a, s, f"len@{at}") for s in seeds) for a in ordered]
    crits.append(Criterion("K orders the arms", f"seed-mean len@{at} non-decreasing along {' ≤ '.join(ordered)}: "
                           + " ≤ ".join(f"{m:.2f}" for m in means),
                           all(a <= b for a, b in zip(means, means[1:]))))
    return crits


def beats_by_margins(values: Values, seeds: list[int], *, arm: str, metric: str, margins: dict[str, float],
                     scale: float = 1.0, unit: str = "") -> list[Criterion]:
    """`arm` beats each other arm by its margin on the seed-mean of `metric`: mean(arm) − mean(other) >= margin,
    one criterion per other arm (`scale` shows values in the unit of the margins, e.g. 100 for points).

    Worked example (Skill-It, metric skill/acc_auc, scale 100, margins stratified 2, random 5): AUCs 0.80, 0.84 for
    skillit and 0.79, 0.81 for stratified give 82.0 − 80.0 = 2.0 >= 2: holds; random at 0.78, 0.78 gives 82.0 −
    78.0 = 4.0 < 5: fails. The paired per-seed differences are in the report's table; the rule is the mean's."""
    mine = statistics.fmean(values[arm][s][metric] for s in seeds) * scale
    crits = []
    for other, margin in margins.items():
        theirs = statistics.fmean(values[other][s][metric] for s in seeds) * scale
        per = ", ".join(f"{(values[arm][s][metric] - values[other][s][metric]) * scale:+.1f}" for s in seeds)
        crits.append(Criterion(f"{arm} ≥ {other} + {margin:g}{unit}",
                               f"seed-mean {metric}: {mine:.1f} vs {theirs:.1f}, difference {mine - theirs:+.1f}"
                               f"{unit} (per seed: {per})", mine - theirs >= margin - 1e-9))
    return crits


def value_at(curve_x: list[tuple[int, float]], curve_y: list[tuple[int, float]], x: float) -> float | None:
    """y at x along a run's curve, x and y logged at the same steps, linear between logged points (x increasing);
    None when x lies outside what was logged."""
    xs = dict(curve_x)
    pts = sorted((xs[s], y) for s, y in curve_y if s in xs)
    for (x0, y0), (x1, y1) in zip(pts, pts[1:]):
        if x0 <= x <= x1:
            return y0 if x1 == x0 else y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return pts[0][1] if pts and pts[0][0] == x else None


def equal_docs(values: Values, seeds: list[int], *, curves: Curves, stoch: str, det: str, metric: str,
               robust_metric: str, x: str = "train/docs_seen", robust_gap: float = 0.05, scale: float = 100.0
               ) -> list[Criterion]:
    """StochasTok at equal problems seen (docs/results.md, "StochasTok at equal problems seen"):

    1. in each seed, d = the mean over the `stoch` run's evaluations of its `metric` minus the `det` run's `metric`
       read off its curve at the same number of documents seen (`x`, linear between evaluations; evaluations past
       the `det` run's last count are left out). So d compares the two learning curves over the whole run, at equal
       problems, not only their (often saturated) ends. The seed-mean d must not be below 0 by more than the seeds'
       noise: mean(d) >= −std(d);
    2. `stoch` stays robust to the other tokenization: its final `robust_metric` >= `metric` − robust_gap, in every
       seed.

    Worked example (scale 100): det's accuracy is 0.40 at 1000 documents and 0.80 at 2000; stoch evaluated once,
    at 1500 documents with 0.55 -> det at 1500 is 0.60, d = −5 points. With d = −5, +1, −2 over three seeds: mean
    −2.0, std 3.0, −2.0 >= −3.0 holds.
    """
    ds, detail = [], []
    for s in seeds:
        det_x, det_y = curves[det][s][x], curves[det][s][metric]
        own_x = dict(curves[stoch][s][x])
        diffs = []
        for step, mine in curves[stoch][s][metric]:
            if step not in own_x:
                continue
            theirs = value_at(det_x, det_y, own_x[step])
            if theirs is not None:
                diffs.append(mine - theirs)
        if not diffs:
            return [Criterion("equal problems seen", f"seed {s}: no {stoch} evaluation lies within the {det} run's "
                              f"logged {x} range", False)]
        ds.append(statistics.fmean(diffs) * scale)
        detail.append(f"seed {s}: {ds[-1]:+.1f} over {len(diffs)} evaluations")
    mean = statistics.fmean(ds)
    sd = statistics.stdev(ds) if len(ds) > 1 else 0.0
    robust = [values[stoch][s][robust_metric] >= values[stoch][s][metric] - robust_gap for s in seeds]
    rob = ", ".join(f"{values[stoch][s][robust_metric] * scale:.1f} vs {values[stoch][s][metric] * scale:.1f}"
                    for s in seeds)
    return [
        Criterion(f"{stoch} not below {det} at equal problems seen",
                  f"{metric}: mean difference {mean:+.1f} ± {sd:.1f} points (std over seeds) >= −{sd:.1f} ("
                  + "; ".join(detail) + ")", mean >= -sd - 1e-9),
        Criterion(f"{stoch} robust to {robust_metric.rsplit('/', 1)[-1]}",
                  f"{robust_metric} >= {metric} − {robust_gap * scale:g} points in {_count(robust)} ({rob})",
                  all(robust)),
    ]


def paired_wins(values: Values, seeds: list[int], *, arm: str, metric: str, margins: dict[str, float],
                min_seeds: int, scale: float = 1.0, unit: str = "") -> list[Criterion]:
    """`arm` beats each other arm, paired per seed, by more than 0 and by at least that arm's margin, in at least
    `min_seeds` seeds: one criterion per other arm (`scale` shows values in the unit of the margins).

    Worked example (cDPO, metric arith/acc, scale 100, margins shuffled 1, dpo 0, min_seeds 4 of 5): differences
    cdpo − shuffled of +1.2, +0.4, +2.0, +1.0, +3.1 points win in 4 seeds (+0.4 < 1): holds; cdpo − dpo of +0.5,
    0.0, −0.3, +2.0, +0.1 win in 3 (0.0 is not a win): fails. tests/test_reproduce.py checks these numbers.
    """
    crits = []
    for other, margin in margins.items():
        diffs = [(values[arm][s][metric] - values[other][s][metric]) * scale for s in seeds]
        wins = [d > 1e-9 and d >= margin - 1e-9 for d in diffs]
        mu = statistics.fmean(diffs)
        sd = statistics.stdev(diffs) if len(diffs) > 1 else 0.0
        need = f"by ≥ {margin:g}{unit}" if margin > 0 else "by > 0"
        crits.append(Criterion(f"{arm} beats {other} {need} in ≥ {min_seeds} of {len(seeds)} seeds",
                               f"{metric}: wins in {sum(wins)} of {len(seeds)} (per seed: "
                               + ", ".join(f"{d:+.1f}" for d in diffs) + f"; mean {mu:+.1f} ± {sd:.1f}{unit})",
                               sum(wins) >= min_seeds))
    return crits


def first_reach(tokens: list[tuple[int, float]], acc: list[tuple[int, float]], target: float) -> float | None:
    """Back-propagated tokens at the first evaluation whose accuracy is >= target (None: never reached)."""
    logged = sorted(tokens)
    for step, a in sorted(acc):
        if a >= target - 1e-12:
            before = [t for s, t in logged if s <= step]  # the count logged at (or just before) that evaluation
            return before[-1] if before else None
    return None


def d3s_budget(values: Values, seeds: list[int], *, curves: Curves, d3s: str, grpo: str, random: str, base: str,
               metric: str, tokens: str = "train/backprop_tokens", budget: float = 0.6, min_seeds: int = 2,
               baseline_gain: float = 0.08, scale: float = 100.0) -> list[Criterion]:
    """D³S's claim at a baseline that learns (docs/results.md, "GRPO vs D³S at a baseline that learns"):

    0. the baseline learns: the seed-mean of `grpo`'s final `metric` minus the `base` arm's (the SFT policy GRPO
       starts from) is >= baseline_gain (a precondition: without it, no down-sampler can be told apart);
    1. `d3s` reaches `grpo`'s final `metric` with <= budget × `grpo`'s final back-propagated `tokens`, in >=
       min_seeds seeds: per seed, the tokens logged at d3s's first evaluation with metric >= grpo's final one;
    2. `d3s` beats `random` (the same token budget, drawn uniformly) by more than the paired noise: mean over seeds
       of (d3s − random) final `metric` > the std of those differences, and > 0.

    Worked example (scale 100): grpo's base 0.40, final 0.50 in each of 3 seeds (gain 10 >= 8 points); grpo
    back-propagates 1000 tokens; d3s reaches 0.50 at 450, 700 and never: 1 of 3 seeds within 600: fails; d3s − random
    of +2, +3, +1 points: mean 2.0 > std 1.0: holds. tests/test_reproduce.py checks these numbers.
    """
    gains = [(values[grpo][s][metric] - values[base][s][metric]) * scale for s in seeds]
    crits = [Criterion(f"{grpo} learns (≥ {baseline_gain * scale:g} points over its base)",
                       f"{metric}, {grpo} − {base}: mean {statistics.fmean(gains):+.1f} points (per seed: "
                       + ", ".join(f"{g:+.1f}" for g in gains) + ")",
                       statistics.fmean(gains) >= baseline_gain * scale - 1e-9)]
    within, detail = [], []
    for s in seeds:
        target = values[grpo][s][metric]
        full = values[grpo][s][tokens]
        got = first_reach(curves[d3s][s][tokens], curves[d3s][s][metric], target)
        within.append(got is not None and got <= budget * full + 1e-9)
        reached = "never" if got is None else f"{got / full:.0%}"
        detail.append(f"seed {s}: {reached} (target {target * scale:.1f})")
    crits.append(Criterion(f"{d3s} reaches {grpo}'s final {metric} with ≤ {budget:.0%} of its tokens in ≥ {min_seeds}"
                           f" of {len(seeds)} seeds", f"{sum(within)} of {len(seeds)} (" + "; ".join(detail) + ")",
                           sum(within) >= min_seeds))
    diffs = [(values[d3s][s][metric] - values[random][s][metric]) * scale for s in seeds]
    mu = statistics.fmean(diffs)
    sd = statistics.stdev(diffs) if len(diffs) > 1 else 0.0
    crits.append(Criterion(f"{d3s} beats {random} by more than the paired noise",
                           f"{metric}: mean {mu:+.1f} ± {sd:.1f} points (per seed: "
                           + ", ".join(f"{d:+.1f}" for d in diffs) + "); needs mean > std and > 0",
                           mu > sd and mu > 0))
    return crits
