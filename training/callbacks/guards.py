"""Stopping a run: at its target step, or when its losses stop being finite."""

from __future__ import annotations

import math

import keras

from training.callbacks.steps import generator_step


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN or infinite loss."""


class StopOnNonFiniteLoss(keras.callbacks.Callback):
    """Stops training as soon as a logged loss is NaN or infinite.

    Sets `triggered` (which the checkpoint callback reads, so the bad weights are never saved)
    and stops `fit`; the training command then reports the step and the last good checkpoint.

    Args:
        keys: the log entries to watch.
    """

    def __init__(self, keys: tuple[str, ...] = ("d_loss", "g_loss")):
        super().__init__()
        self.keys = keys
        self.triggered: str | None = None

    def on_train_batch_end(self, batch, logs=None):
        for key in self.keys:
            value = (logs or {}).get(key)
            if value is not None and not math.isfinite(float(value)):
                step = generator_step(self.model)
                self.triggered = f"{key} = {float(value)} at generator step {step}"
                self.model.stop_training = True
                return


class StopAtStep(keras.callbacks.Callback):
    """Stops `fit` once the generator has taken `steps` steps (a resumed run may start
    between two log intervals, so epochs alone would overshoot)."""

    def __init__(self, steps: int):
        super().__init__()
        self.steps = steps

    def on_train_batch_end(self, batch, logs=None):
        if generator_step(self.model) >= self.steps:
            self.model.stop_training = True
