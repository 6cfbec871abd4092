"""Pictures of critical-token scores: wrong solutions with every token coloured by its score (HTML), and where the
lowest-scored token falls relative to the first wrong step (PNG)."""

from __future__ import annotations

import html
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from src.plots.save import save_png

_STYLE = """<style>
body{font-family:ui-monospace,monospace;font-size:14px;margin:2em}
.row{margin:.4em 0;white-space:pre}.p{color:#666}.t{padding:1px 0;border-radius:2px}
.w{border-bottom:2px solid #333}.low{outline:1px solid #000}
</style>"""


def token_score_html(rows: Sequence[dict[str, Any]], title: str = "critical tokens") -> str:
    """One line per solution: the prompt in grey, then each token on a red background whose strength is 1 − score
    (a critical token is dark red), its score in the tooltip; the first wrong step underlined, the lowest-scored
    token outlined. Row keys: prompt, tokens (strings), scores, optional wrong_span ([start, end) characters)."""
    lines = [f"<!doctype html><meta charset=utf-8><title>{html.escape(title)}</title>{_STYLE}",
             f"<h3>{html.escape(title)}</h3><p>red = low score s<sub>t</sub> (the negative model prefers the token "
             "far more than the positive one); underlined: the first wrong step; outlined: the lowest score.</p>"]
    for r in rows:
        tokens, scores = r["tokens"], r["scores"]
        span = r.get("wrong_span")
        low = min(range(len(scores)), key=scores.__getitem__) if scores else -1
        parts, pos = [f'<span class="p">{html.escape(r["prompt"])}</span>'], 0
        for i, (t, s) in enumerate(zip(tokens, scores)):
            classes = ["t"]
            if span and pos < span[1] and pos + len(t) > span[0]:
                classes.append("w")
            if i == low:
                classes.append("low")
            alpha = max(0.0, min(1.0, 1.0 - float(s)))
            parts.append(f'<span class="{" ".join(classes)}" style="background:rgba(220,30,30,{alpha:.2f})" '
                         f'title="{float(s):.3f}">{html.escape(t)}</span>')
            pos += len(t)
        lines.append(f'<div class="row">{"".join(parts)}</div>')
    return "\n".join(lines) + "\n"


def plot_lowest_token_offsets(offsets: Sequence[int], path: Path, random_rate: float | None = None,
                              title: str = "lowest-score token vs first wrong step") -> None:
    """Bar chart of (step of the lowest-scored token − first wrong step) over wrong solutions; 0 = inside the
    first wrong step. `random_rate`: the share a uniformly drawn token would land at 0 (dashed line)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = Counter(offsets)
    total = max(1, len(offsets))
    xs = sorted(counts) or [0]
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.bar(xs, [counts[x] / total for x in xs], color=["#c0392b" if x == 0 else "#7f8c8d" for x in xs])
    if random_rate is not None:
        ax.axhline(random_rate, ls="--", color="k", lw=1, label=f"random token at 0: {random_rate:.2f}")
        ax.legend(loc="upper right", fontsize=8)
    ax.set_xticks(xs)
    ax.set_xlabel("step of lowest-score token − first wrong step")
    ax.set_ylabel("share of wrong solutions")
    ax.set_title(title, fontsize=10)
    save_png(fig, path)
