"""The training command, recording the weights it ends with (for the multi-worker tests).

`python -m tests.training.train_recording_weights RECORD.npz [train flags...]` runs
`training.train` with those flags and writes the final weights of the GAN this process
trained to RECORD.npz, so that a test can compare workers whose scratch folders are gone.
"""

from __future__ import annotations

import sys

import numpy as np

from training import train, trainer


def main(argv: list[str]) -> int:
    record, *flags = argv
    train_run = trainer.train

    def train_and_record(*args, **kwargs):
        result = train_run(*args, **kwargs)
        np.savez(record, *[np.asarray(weight.numpy()) for weight in result.gan.weights])
        return result

    trainer.train = train_and_record
    return train.main(flags)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
