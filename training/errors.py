"""The error a user can fix: a bad flag, a missing file, a damaged run folder.

Library modules raise a subclass of `UserError` when the cause is something the user gave or
keeps on disk, and put the fix in the message; `training.cli` prints it as `error: ...` with
exit code 2 and no traceback. Any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import errno
import os
import signal


class UserError(Exception):
    """A mistake the user can fix; the message names what is wrong and how to fix it."""


class DataError(UserError, ValueError):
    """The data named by `--dataset` / `--data-dir` cannot be read as images."""


class DataPathError(UserError, FileNotFoundError):
    """The data path named by `--data-dir` does not exist."""


class DataUnavailableError(UserError, RuntimeError):
    """A named data set cannot be downloaded or prepared here (offline, manual download)."""


class UsageError(UserError):
    """Flags that do not go together."""


class OutputPathError(UserError):
    """A file a command is asked to write has the wrong type or cannot be written."""


class RunFolderError(UserError, RuntimeError):
    """A run folder cannot be used as asked (busy, another configuration, nothing to export)."""


class StrategyError(UserError, ValueError):
    """The `--strategy` asked for cannot start here (no TPU, no or a bad TF_CONFIG)."""


class Stopped(KeyboardInterrupt):
    """Ctrl-C or SIGTERM arrived; carries the signal's number (the exit code is 128 + it)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def is_disk_full(error: Exception) -> bool:
    """Whether `error` (an OSError, or TensorFlow's error for one) says the disk is full."""
    if isinstance(error, OSError):
        return error.errno == errno.ENOSPC
    # TensorFlow's file system turns ENOSPC into its own errors, with the system's message.
    return os.strerror(errno.ENOSPC) in str(error)
