"""Stopping every worker of a multi-worker cluster after the same step, whichever worker
Ctrl-C or SIGTERM reached."""

from __future__ import annotations

import signal
import sys

import keras
import tensorflow as tf

from training.errors import Stopped
from training.signals import StopRequest


class AgreedStop(keras.callbacks.Callback):
    """Stops all workers of a `MultiWorkerMirroredStrategy` cluster after the same step when
    Ctrl-C or SIGTERM reaches any of them.

    A signal usually reaches one worker only; a worker that stopped alone would leave the
    others waiting in the next all-reduce for ever. So the signal handler only notes the
    signal (`StopRequest.note`), and `check`, before each step and wherever the trainer calls
    it, gathers the noted signals of all workers: a collective, so every worker calls it at
    the same points. When any worker noted one, every worker raises `Stopped` there, after the
    same step, and saves the same checkpoint. SIGTERM wins over Ctrl-C when both arrived.

    Args:
        strategy: the cluster's strategy.
        request: where this worker's signal handler notes a signal.
    """

    def __init__(self, strategy: tf.distribute.Strategy, request: StopRequest):
        super().__init__()
        self.strategy = strategy
        self.request = request

    def check(self) -> None:
        """Raises `Stopped` with the signal when one reached any worker. Every worker must
        call it at the same point.

        Raises:
            Stopped: a worker of the cluster noted Ctrl-C or SIGTERM.
        """
        noted = self._noted_by_every_replica(tf.constant(self.request.signum, tf.int32))
        requested = set(noted.numpy().tolist()) - {0}
        if not requested:
            return
        signum = max(requested)
        if self.request.signum != signum:
            print(f"\n{signal.Signals(signum).name} reached another worker of the cluster: "
                  "all stop after this step.", file=sys.stderr, flush=True)
        raise Stopped(signum)

    @tf.function
    def _noted_by_every_replica(self, requested: tf.Tensor) -> tf.Tensor:
        # A function, traced once: run eagerly, the strategy's collectives are slow and warn
        # so at every call.
        return self.strategy.gather(self.strategy.run(lambda: tf.reshape(requested, [1])),
                                    axis=0)

    def on_train_batch_begin(self, batch, logs=None):
        # Before the step, not after the last one: that one's epoch end (its log row, its
        # checkpoint) has run on every worker.
        self.check()
