"""TensorBoard scalars indexed by the generator step, so resumed runs continue one curve."""

from __future__ import annotations

import keras
import numpy as np

from training.callbacks.steps import generator_step


class StepScalarLogger(keras.callbacks.Callback):
    """Writes every numeric entry of the epoch logs to TensorBoard at the current step.

    Keras's TensorBoard callback indexes epoch logs by epoch; a GAN run reads better against
    generator steps, which also survive a resume unchanged.

    Args:
        summary_writer: a `tf.summary` writer (e.g. `tf.summary.create_file_writer(logdir)`).
    """

    def __init__(self, summary_writer):
        super().__init__()
        self.summary_writer = summary_writer

    def on_epoch_end(self, epoch, logs=None):
        import tensorflow as tf

        step = generator_step(self.model)
        with self.summary_writer.as_default(step=step):
            for name, value in (logs or {}).items():
                if np.ndim(value) == 0 and name != "step":
                    tf.summary.scalar(name, float(value))
        self.summary_writer.flush()
