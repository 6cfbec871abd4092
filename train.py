"""tokensmith entry point: `python train.py experiment=<name> [overrides]` (see README)."""

from __future__ import annotations

import logging
import os
import sys

import hydra
from omegaconf import DictConfig

import src.runtime.resolvers  # noqa: F401  (registers ${ts.*} before Hydra composes conf/)
from src.runtime.errors import USER_ERRORS
from src.runtime.run import run_training

log = logging.getLogger("tokensmith")


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    try:
        metrics = run_training(cfg)
    except USER_ERRORS as err:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        log.error("%s: %s", type(err).__name__, err)
        print(f"error: {err}\n(set HYDRA_FULL_ERROR=1 for the traceback)", file=sys.stderr)
        sys.exit(2)
    value = metrics.get(cfg.get("optimized_metric") or "")
    return float(value) if value is not None else None


if __name__ == "__main__":
    from pathlib import Path

    from src.runtime.catalog import format_catalog, unknown_choice

    conf = Path(__file__).resolve().parent / "conf"
    if "--list" in sys.argv[1:]:  # before Hydra, which would reject the flag
        print(format_catalog(conf))
        sys.exit(0)
    problem = unknown_choice(sys.argv[1:], conf)  # Hydra's own message omits nested experiments
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        sys.exit(2)
    main()
