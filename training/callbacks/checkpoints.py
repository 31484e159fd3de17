"""Checkpoints of a whole GAN run: both networks, both optimizers, the step, the EMA weights,
and the running means of the log interval the step falls in.

`tf.train.CheckpointManager` writes each checkpoint under a temporary name and updates its
state file (`checkpoint`) last, atomically, so a run killed mid-save resumes from the previous
checkpoint. A restore trusts the files, not only the state file: a damaged state file, or a
newest checkpoint that no longer reads, falls back to the newest checkpoint that restores
(with a warning naming what was skipped and why); when none restores, `CheckpointError` names
the folder instead of silently starting over (which would overwrite the checkpoints).
The training RNG needs no state of its own: latents are a function of (seed, step), and the
data stream is rebuilt from the seed and skipped to the step (`make_train_dataset(start_batch=)`).
The running means let a run resumed between two log rows write the next row over the same
steps as an uninterrupted run's, not only over the steps since the resume.
"""

from __future__ import annotations

import os
import re
import shutil
import sys

import keras
import numpy as np
import tensorflow as tf

from training.callbacks.steps import generator_step
from training.errors import UserError


class CheckpointError(UserError, RuntimeError):
    """A run folder has checkpoints, and none of them restores."""


_CHECKPOINT_INDEX = re.compile(r"ckpt-(\d+)\.index")
_STEP_KEY = "gan/step/.ATTRIBUTES/VARIABLE_VALUE"


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
        training_state = dict(gan=gan, d_optimizer=gan.d_optimizer, g_optimizer=gan.g_optimizer)
        # What a restore requires: the checkpoints of earlier versions have no running means.
        self._training_state = tf.train.Checkpoint(**training_state)
        self.checkpoint = tf.train.Checkpoint(
            **training_state, log_interval={metric.name: list(metric.variables)
                                            for metric in gan.metrics})
        # Created now, not by the first restore: under MultiWorkerMirroredStrategy creating a
        # variable is a collective, and a worker with nothing to restore would skip it.
        _ = self.checkpoint.save_counter
        self.directory = os.fspath(directory)
        self.max_to_keep = max_to_keep
        self._remove_unfinished_saves()
        self.manager = self._manager()
        # The step of the newest checkpoint restored or saved by this process: every worker of
        # a cluster decides from it alike when to save (a save runs collectives on all).
        self.saved_step: int | None = None
        self.saved_path: str | None = None
        # The metrics' state read from the restored checkpoint, until `continue_log_interval`.
        self._log_interval: dict[str, list[np.ndarray]] | None = None

    def _manager(self) -> tf.train.CheckpointManager:
        return tf.train.CheckpointManager(self.checkpoint, self.directory,
                                          max_to_keep=self.max_to_keep)

    def _remove_unfinished_saves(self) -> None:
        """Deletes the `ckpt-N_temp` folders of saves that were killed before they finished:
        never a checkpoint, and TensorFlow does not reuse them."""
        if not os.path.isdir(self.directory):
            return
        for name in os.listdir(self.directory):
            path = os.path.join(self.directory, name)
            if name.endswith("_temp") and os.path.isdir(path):
                shutil.rmtree(path, ignore_errors=True)

    @property
    def step(self) -> int:
        """The generator step the GAN is at."""
        return generator_step(self.gan)

    @property
    def latest(self) -> str | None:
        return self.manager.latest_checkpoint

    def restore(self, from_directory: str | os.PathLike | None = None) -> int:
        """Restores the newest checkpoint that reads, and returns its step (0 without any).

        Args:
            from_directory: read the checkpoints of this folder instead of our own, and
                leave it as it is (a worker that is not the chief reads the chief's).

        Raises:
            CheckpointError: checkpoints exist and none of them restores.
        """
        directory = self.directory if from_directory is None else os.fspath(from_directory)
        numbers = checkpoint_steps(directory)
        if not numbers:
            return 0
        newest_listed = self.latest
        skipped = []
        for number in numbers:
            path = os.path.join(directory, f"ckpt-{number}")
            try:
                self._read_training_state(path)
            except Exception as error:  # a truncated or corrupt file raises many kinds
                skipped.append(f"{os.path.basename(path)} ({type(error).__name__}: "
                               f"{str(error).splitlines()[0][:200] if str(error) else ''})")
                continue
            self.saved_step, self.saved_path = number, path
            self._log_interval = self._read_log_interval(path)
            if from_directory is not None:
                return self.step
            if skipped or newest_listed != path:
                self._rewrite_state(numbers, number)
                print(f"warning: resumed from {path}"
                      + (f"; skipped {', '.join(skipped)}" if skipped else "")
                      + ("; the checkpoint state file was damaged or out of date and has been "
                         "rewritten" if newest_listed != path else "") + ".",
                      file=sys.stderr, flush=True)
            return self.step
        raise CheckpointError(
            f"none of the checkpoints in {directory} restores: {'; '.join(skipped)}. "
            "Move the folder aside and start a new run (or give another --out); the files "
            "were left as they are.")

    def _read_training_state(self, path: str) -> None:
        """Restores the GAN and its optimizers from the checkpoint at `path`. One saved
        before the GAN counted its steps gets the step from the generator's optimizer, which
        counted them then."""
        # `read`, not `restore`: it creates no save counter, a collective under
        # MultiWorkerMirroredStrategy that a worker without checkpoints would skip.
        status = self._training_state.read(path)
        if tf.train.load_checkpoint(path).has_tensor(_STEP_KEY):
            # Partial: the save counter and the running means are not read here.
            status.expect_partial().assert_existing_objects_matched()
            return
        status.expect_partial()  # all but the step, which it lacks
        self.gan.step.assign(self.gan.g_optimizer.iterations)

    def _read_log_interval(self, path: str) -> dict[str, list[np.ndarray]] | None:
        """The state of the GAN's metrics saved in the checkpoint at `path`, by metric; None
        when it has none (saved by an earlier version) or lacks a metric (another loss)."""
        # Read from the file, not into the metrics: `fit` resets them before the first step.
        reader = tf.train.load_checkpoint(path)
        saved = reader.get_variable_to_shape_map()
        keys = {metric.name: [f"log_interval/{metric.name}/{index}/.ATTRIBUTES/VARIABLE_VALUE"
                              for index in range(len(metric.variables))]
                for metric in self.gan.metrics}
        if not all(key in saved for metric_keys in keys.values() for key in metric_keys):
            return None
        return {name: [reader.get_tensor(key) for key in metric_keys]
                for name, metric_keys in keys.items()}

    def continue_log_interval(self) -> bool:
        """Puts the metrics' state of the restored checkpoint back into the GAN's metrics,
        once (call it when `fit` has reset them for the epoch that continues the restored
        step's log interval).

        Returns:
            Whether the checkpoint had that state (one saved by an earlier version has not).
        """
        saved, self._log_interval = self._log_interval, None
        if saved is None:
            return False
        for metric in self.gan.metrics:
            for variable, value in zip(metric.variables, saved[metric.name]):
                variable.assign(value)
        return True

    def _rewrite_state(self, numbers: list[int], restored: int) -> None:
        """Points the state file at the restored checkpoint (and the older ones), so the
        manager keeps counting from there; newer damaged files are overwritten when the run
        reaches their steps again."""
        kept = sorted(number for number in numbers if number <= restored)[-self.max_to_keep:]
        paths = [os.path.join(self.directory, f"ckpt-{number}") for number in kept]
        tf.compat.v1.train.update_checkpoint_state(self.directory, paths[-1], paths)
        self.manager = self._manager()

    def save(self) -> str:
        """Writes a checkpoint numbered by the current step and returns its path. A step
        saved (or restored) already is not written again: rewriting the newest good
        checkpoint's files would only put it at risk."""
        if self.step != self.saved_step:
            self.saved_path = self.manager.save(checkpoint_number=self.step)
            self.saved_step = self.step
        return self.saved_path


class CheckpointCallback(keras.callbacks.Callback):
    """Saves a `RunCheckpoint` every `every_n_steps` generator steps and at the end.

    Args:
        checkpoint: the run's `RunCheckpoint`.
        every_n_steps: the checkpoint interval (at most this many steps are lost in a crash).
        log_every: the log interval (`fit`'s epoch): an epoch that starts between two log
            rows continues a resumed run's interval, with the running means restored.
        is_healthy: called before each save; a False answer (e.g. after a NaN loss) skips
            the save so the last good checkpoint stays the latest.

    Before each save every weight of the model is checked: a NaN or infinite one skips the
    save, stops training and sets `nonfinite_weights_step`.

    A step's save waits for the callbacks of that step to finish (it runs at the next step's
    start, or at the epoch's end, after the callbacks listed before this one): a crash
    between the two would otherwise leave a checkpoint of a step whose log row was never
    written, and the resumed run, starting after it, would never write it.
    """

    def __init__(self, checkpoint: RunCheckpoint, every_n_steps: int, log_every: int,
                 is_healthy=lambda: True):
        super().__init__()
        self.checkpoint = checkpoint
        self.every_n_steps = every_n_steps
        self.log_every = log_every
        self.is_healthy = is_healthy
        self.nonfinite_weights_step: int | None = None

    def _weights_are_finite(self) -> bool:
        """Checks the weights; non-finite ones stop the training and are reported."""
        if weights_are_finite(self.model):
            return True
        self.model.stop_training = True
        if self.nonfinite_weights_step is None:
            self.nonfinite_weights_step = self.checkpoint.step
        return False

    def _save_if_new(self) -> None:
        if self.checkpoint.step == self.checkpoint.saved_step or not self.is_healthy():
            return
        # An update can overflow the weights while the logged losses (computed before it)
        # are still finite: never save that as "the last good checkpoint".
        if self._weights_are_finite():
            self.checkpoint.save()

    def _is_due(self) -> bool:
        step = self.checkpoint.step
        return bool(step) and step % self.every_n_steps == 0  # step 0 is the initialization

    def on_epoch_begin(self, epoch, logs=None):
        # `fit` has just reset the metrics; the row that ends this epoch must average the
        # steps of an uninterrupted run's row, those before the resume included.
        step = self.checkpoint.step
        if step % self.log_every and not self.checkpoint.continue_log_interval():
            next_row = step + -step % self.log_every
            print(f"note: {self.checkpoint.saved_path} holds no running means of its log "
                  "interval (an earlier version saved it, or other metrics): the row of step "
                  f"{next_row} averages only the steps after {step}.", file=sys.stderr,
                  flush=True)

    def on_train_batch_end(self, batch, logs=None):
        # `fit` reads stop_training only after a batch's end: weights found non-finite at the
        # next step's start (the save) would train one more step.
        if self._is_due():
            self._weights_are_finite()

    def on_train_batch_begin(self, batch, logs=None):
        if self._is_due():
            self._save_if_new()

    def on_epoch_end(self, epoch, logs=None):
        if not self.checkpoint.step % self.log_every:
            # The interval's row is written: saves from here on hold an empty interval, as a
            # resume here starts one (under a --log-every changed on resume too).
            self.model.reset_metrics()
        if self._is_due():
            self._save_if_new()

    def on_train_end(self, logs=None):
        self._save_if_new()


def checkpoint_steps(directory: str | os.PathLike) -> list[int]:
    """The steps of the checkpoints in `directory` that have an index file, newest first."""
    if not os.path.isdir(directory):
        return []
    numbers = [int(match.group(1)) for match in map(_CHECKPOINT_INDEX.fullmatch,
                                                    os.listdir(directory)) if match]
    return sorted(numbers, reverse=True)


def weights_are_finite(model: keras.Model) -> bool:
    """Whether every weight (trainable or not) of `model` is finite."""
    return all(np.all(np.isfinite(keras.ops.convert_to_numpy(weight.value)))
               for weight in model.weights)
