"""W&B logging survives its service dying (what SLURM's SIGTERM does to `wandb-core` during a preemption): the
logger warns and stops W&B calls instead of raising out of the training loop before the preemption checkpoint."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.helpers import ROOT

# Runs in its own interpreter: the W&B service is per process, and this kills it.
SCRIPT = textwrap.dedent("""
    import signal, sys, time
    import psutil
    from src.runtime.wandb_logger import WandbLogger

    logger = WandbLogger(project="t", save_dir=sys.argv[1], offline=True)
    logger.log_metrics({"loss": 1.0}, step=0)  # starts the run and its wandb-core service
    me = psutil.Process()
    service = [p for p in me.children(recursive=True) if "wandb" in " ".join(p.cmdline())]
    assert service, "no wandb-core child process found"
    for p in service:
        p.send_signal(signal.SIGTERM)  # as SLURM does to every process of the job step
    psutil.wait_procs(service, timeout=30)
    for step in range(1, 50):  # the error surfaces on a later write; none of these may raise
        logger.log_metrics({"loss": 1.0 / step}, step=step)
        time.sleep(0.01)
    assert isinstance(logger.service_lost, ConnectionError), logger.service_lost
    logger.finalize("success")  # no-op now, must not raise either
    logger.service_lost = None
    try:  # an error that is not about the connection still reaches the user
        logger.log_metrics(None)
    except TypeError:
        print("OK")
""")


def test_lost_wandb_service_stops_wandb_logging_without_raising(tmp_path: Path) -> None:
    # WANDB_SERVICE: set by any in-process W&B use earlier in this pytest worker; inherited, it would make the child
    # connect to that service instead of starting its own (and this test needs its own to kill).
    env = {**{k: v for k, v in os.environ.items() if k != "WANDB_SERVICE"}, "WANDB_MODE": "offline",
           "WANDB_SILENT": "true", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=180)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("OK"), proc.stderr[-3000:]
    assert "W&B service connection lost" in proc.stderr


def test_an_unreachable_wandb_server_means_offline_logging_and_one_warning(tmp_path: Path, monkeypatch,
                                                                           caplog) -> None:  # noqa: ANN001
    """No network: the logger does not wait for W&B's retries to fail the run; it logs offline and says so once."""
    import logging

    from src.runtime.wandb_logger import WandbLogger

    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # the discard port: nothing listens
    with caplog.at_level(logging.WARNING, logger="src.runtime.wandb_logger"):
        logger = WandbLogger(project="p", save_dir=str(tmp_path), offline=False)
    assert logger._offline is True
    (warning,) = [r for r in caplog.records if "cannot reach" in r.getMessage()]
    assert "127.0.0.1:9" in warning.getMessage() and "wandb sync" in warning.getMessage()
    monkeypatch.setenv("WANDB_MODE", "offline")  # already offline: no probe, no warning
    caplog.clear()
    assert WandbLogger(project="p", save_dir=str(tmp_path))._offline is False
    assert not caplog.records
