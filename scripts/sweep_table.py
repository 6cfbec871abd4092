"""Kept for old commands: `python scripts/sweep_table.py <dir> --group ... --metrics ...` is now
`python -m src.report <dir> --group ... --metrics ...` (same flags; it also writes report.md and loss-curve PNGs)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from src.report.__main__ import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
