"""Checkpoints of a whole GAN run: both networks, both optimizers, the step, the EMA weights.

`tf.train.CheckpointManager` writes each checkpoint under a temporary name and updates its
index file last, atomically, so a run killed mid-save resumes from the previous checkpoint.
The training RNG needs no state of its own: latents are a function of (seed, step), and the
data stream is rebuilt from the seed and skipped to the step (`make_train_dataset(start_batch=)`).
"""

from __future__ import annotations

import os

import keras
import tensorflow as tf


class RunCheckpoint:
    """Saves and restores a GAN's full training state.

    Args:
        gan: a compiled `training.GAN`.
        directory: the checkpoint folder.
        max_to_keep: how many recent checkpoints to keep.
    """

    def __init__(self, gan: keras.Model, directory: str | os.PathLike, max_to_keep: int = 3):
        self.gan = gan
        # Optimizer slots are created lazily; build them so a restore fills real variables.
        gan.d_optimizer.build(gan.discriminator.trainable_variables)
        gan.g_optimizer.build(gan.generator.trainable_variables)
        self.checkpoint = tf.train.Checkpoint(gan=gan, d_optimizer=gan.d_optimizer,
                                              g_optimizer=gan.g_optimizer)
        self.manager = tf.train.CheckpointManager(self.checkpoint, os.fspath(directory),
                                                  max_to_keep=max_to_keep)

    @property
    def step(self) -> int:
        """The generator step the GAN is at."""
        return int(self.gan.g_optimizer.iterations)

    @property
    def latest(self) -> str | None:
        return self.manager.latest_checkpoint

    def restore(self) -> int:
        """Restores the latest checkpoint, if any, and returns the step it was taken at."""
        if self.latest is None:
            return 0
        self.checkpoint.restore(self.latest).assert_existing_objects_matched()
        return self.step

    def save(self) -> str:
        """Writes a checkpoint numbered by the current step and returns its path."""
        return self.manager.save(checkpoint_number=self.step)


class CheckpointCallback(keras.callbacks.Callback):
    """Saves a `RunCheckpoint` every `every_n_steps` generator steps and at the end.

    Args:
        checkpoint: the run's `RunCheckpoint`.
        every_n_steps: the checkpoint interval (at most this many steps are lost in a crash).
        is_healthy: called before each save; a False answer (e.g. after a NaN loss) skips
            the save so the last good checkpoint stays the latest.
    """

    def __init__(self, checkpoint: RunCheckpoint, every_n_steps: int,
                 is_healthy=lambda: True):
        super().__init__()
        self.checkpoint = checkpoint
        self.every_n_steps = every_n_steps
        self.is_healthy = is_healthy

    def _save_if_new(self) -> None:
        latest = self.checkpoint.latest
        saved_step = int(latest.rsplit("-", 1)[-1]) if latest else -1
        if self.is_healthy() and self.checkpoint.step != saved_step:
            self.checkpoint.save()

    def on_train_batch_end(self, batch, logs=None):
        if self.checkpoint.step % self.every_n_steps == 0:
            self._save_if_new()

    def on_train_end(self, logs=None):
        self._save_if_new()
