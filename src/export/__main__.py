"""`python -m src.export <run dir | checkpoint> <out dir>`: see src/export/cli.py."""

import sys

from src.export.cli import main

sys.exit(main())
