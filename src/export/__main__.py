"""`python -m src.export <run dir | checkpoint> <out dir>`: see src/export/cli.py."""

import sys

from src.export.cli import main

if __name__ == "__main__":  # importing this module (tests/test_imports.py walks every module) runs nothing
    sys.exit(main())
