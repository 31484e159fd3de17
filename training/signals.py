"""How Ctrl-C and SIGTERM reach a training run: handlers for a block of code, raising `Stopped`
at once (one process), or noting the signal to be acted on where every worker of a cluster
agrees (`StopRequest`; `callbacks.AgreedStop` acts on it)."""

from __future__ import annotations

import os
import signal
from typing import Callable

from training.errors import Stopped

_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class SignalHandlers:
    """Within the block, Ctrl-C and SIGTERM go to `handler`, whatever handlers the process
    inherited (a child of a shell without job control starts with SIGINT ignored).

    Args:
        handler: a function of (signum, frame), or `signal.SIG_IGN`.
    """

    def __init__(self, handler: Callable | int):
        self.handler = handler

    def __enter__(self) -> SignalHandlers:
        self.previous = {signum: signal.signal(signum, self.handler) for signum in _STOP_SIGNALS}
        return self

    def __exit__(self, *exc_info) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)


def raise_stopped(signum: int, frame=None) -> None:
    """A signal handler for one process: stops it where it is."""
    raise Stopped(signum)


def _signal_name(signum: int) -> str:
    return "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name


class StopRequest:
    """The Ctrl-C or SIGTERM that reached this worker of a cluster, noted by `note` (a signal
    handler) to be acted on at a point every worker reaches: a worker that stopped alone would
    leave the others waiting for it in their next collective.

    A second signal stops this worker alone at once, without a checkpoint: the way out when
    the cluster never formed (the other workers were never started).

    Example:

    ```python
    request = StopRequest()
    with SignalHandlers(request.note):
        ...  # every worker: stop where any noted one (see callbacks.AgreedStop)
    ```
    """

    def __init__(self):
        self.signum = 0  # 0: none noted

    def note(self, signum: int, frame=None) -> None:
        # os.write, not print: a handler that prints while the interrupted code prints to the
        # same stream fails with a reentrant-call error.
        name = _signal_name(signum)
        if not self.signum:
            self.signum = signum
            os.write(2, f"\n{name} noted: all workers of the cluster stop after the same step "
                        f"(a second Ctrl-C or SIGTERM stops this worker alone, at once, "
                        f"without a checkpoint).\n".encode())
            return
        os.write(2, f"\n{name} again: this worker stops alone, without a checkpoint. Stop the "
                    "other workers too; the run resumes from its last checkpoint.\n".encode())
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
