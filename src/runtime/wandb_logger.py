"""Lightning's WandbLogger, made to survive losing its W&B service.

Why: `wandb` talks to a separate `wandb-core` service process. When SLURM preempts or requeues a job it sends
SIGTERM to every process of the job step, so the service dies at the same instant the trainer is told to stop.
The trainer then has up to one optimizer step (plus a validation pass) to reach the step boundary where
`PreemptionCheckpoint` saves (src/runtime/preemption.py); any metric logged in that window made stock WandbLogger
raise `ConnectionResetError: Connection lost`, which ended the run *without* its preemption checkpoint. The same
happens when the service crashes or is OOM-killed on its own.

This logger turns a lost service into one warning: W&B calls stop for the rest of this process, training and the
other loggers (CSV) go on. A requeued or resumed attempt starts a fresh service and continues the same W&B run
(src/runtime/wandb_resume.py); only the metrics logged after the loss are missing from W&B (they are in the CSV).
Errors that are not about the connection (a bad metric value, a wrong key) still raise.

No network at start (a laptop on a train, a compute node without egress): W&B would retry for minutes and then
fail the run. The logger first tries a TCP connection to the W&B server (`WANDB_BASE_URL`, default
api.wandb.ai:443, 3 s); when it cannot be reached it logs offline into the run dir instead and says so in one
warning line (`wandb sync <dir>` uploads the run later).
"""

from __future__ import annotations

import functools
import logging
import os
import socket
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import urlparse

from lightning.pytorch.loggers import WandbLogger as _LightningWandbLogger

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])

# What the service client raises once its socket is gone (asyncio streams: ConnectionResetError("Connection
# lost"); plain sockets: BrokenPipeError / ConnectionRefusedError — all OSError subclasses of ConnectionError).
SERVICE_LOST = (ConnectionError,)


def _unless_service_lost(method: F) -> F:
    @functools.wraps(method)
    def guarded(self: WandbLogger, *args: Any, **kwargs: Any) -> Any:
        if self.service_lost is not None:
            return None
        try:
            return method(self, *args, **kwargs)
        except SERVICE_LOST as err:
            self.service_lost = err
            log.warning(
                "W&B service connection lost (%s: %s) — usually SLURM's SIGTERM reached wandb-core along with the "
                "trainer. W&B logging stops for this process; training and the CSV log go on, and a resumed run "
                "continues the same W&B run.", type(err).__name__, err)
            return None

    return guarded  # type: ignore[return-value]


def wandb_server() -> tuple[str, int]:
    """(host, port) of the W&B server this process would talk to."""
    url = urlparse(os.environ.get("WANDB_BASE_URL") or "https://api.wandb.ai")
    return url.hostname or "api.wandb.ai", url.port or (80 if url.scheme == "http" else 443)


def reachable(host: str, port: int, timeout: float = 3.0) -> bool:
    try:
        socket.create_connection((host, port), timeout=timeout).close()
        return True
    except OSError:
        return False


class WandbLogger(_LightningWandbLogger):
    """`lightning.pytorch.loggers.WandbLogger` whose logging calls survive a dead W&B service (module docstring).

    Same arguments as Lightning's; `service_lost` holds the error that stopped W&B logging, or None.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        offline = bool(kwargs.get("offline")) or os.environ.get("WANDB_MODE") in ("offline", "dryrun", "disabled")
        if not offline:
            server = wandb_server()
            if not reachable(*server):
                log.warning("W&B: cannot reach %s:%s (no network?); logging offline into the run dir instead — "
                            "upload it later with `wandb sync <run dir>/wandb/offline-run-*`", *server)
                kwargs["offline"] = True
        super().__init__(*args, **kwargs)
        self.service_lost: BaseException | None = None

    log_hyperparams = _unless_service_lost(_LightningWandbLogger.log_hyperparams)
    log_metrics = _unless_service_lost(_LightningWandbLogger.log_metrics)
    log_table = _unless_service_lost(_LightningWandbLogger.log_table)
    log_text = _unless_service_lost(_LightningWandbLogger.log_text)
    log_image = _unless_service_lost(_LightningWandbLogger.log_image)
    log_audio = _unless_service_lost(_LightningWandbLogger.log_audio)
    log_video = _unless_service_lost(_LightningWandbLogger.log_video)
    after_save_checkpoint = _unless_service_lost(_LightningWandbLogger.after_save_checkpoint)
    finalize = _unless_service_lost(_LightningWandbLogger.finalize)
