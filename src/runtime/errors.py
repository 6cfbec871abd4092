"""User-fixable errors: `train.py` prints their message (which names the fix) instead of a traceback.

Config values are checked where they are used (a module's __init__ raises ValueError naming the key); Hydra
wraps those in InstantiationException together with the `_target_` that failed, which is the context a user
needs, so it is treated as a user error too. HYDRA_FULL_ERROR=1 shows the traceback for all of them.
"""

from __future__ import annotations

from hydra.errors import InstantiationException

from src.data.errors import DataError
from src.models.objective import NonFiniteLossError, OptimizerConfigError
from src.models.reference import ReferenceMismatchError
from src.runtime.checkpoints import (
    CheckpointMismatchError,
    CheckpointNotFoundError,
    CorruptCheckpointError,
    RunDirTakenError,
)


class ConfigError(ValueError):
    """A config value out of range, found where it is used (e.g. a recipe's settings); the message names the key."""


USER_ERRORS: tuple[type[Exception], ...] = (
    DataError, CheckpointNotFoundError, CorruptCheckpointError, CheckpointMismatchError, RunDirTakenError,
    InstantiationException, NonFiniteLossError, OptimizerConfigError, ConfigError, ReferenceMismatchError,
)
