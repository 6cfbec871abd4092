"""Atomic PNG writes shared by every plot."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def save_png(fig: Any, path: Path, dpi: int = 110) -> None:
    """Lay out `fig`, write it to `path` and close it.

    Written to a temporary name in the same directory and renamed into place, so a reader (a results script, a
    requeued rank, a file browser) never sees half a PNG, and a run killed mid-write leaves the previous plot.
    """
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}.png")
    fig.tight_layout()
    fig.savefig(tmp, dpi=dpi)
    plt.close(fig)
    os.replace(tmp, path)
