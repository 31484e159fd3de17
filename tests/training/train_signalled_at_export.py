"""The training command, sent SIGTERM by itself as its export starts (for the test of a signal
in the last window of a multi-worker run).

`python -m tests.training.train_signalled_at_export [train flags...]`
"""

from __future__ import annotations

import os
import signal
import sys

from training import run_export, train


def main(argv: list[str]) -> int:
    export = run_export.export

    def signalled_export(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        return export(*args, **kwargs)

    run_export.export = signalled_export
    return train.main(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
