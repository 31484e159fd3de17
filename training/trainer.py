"""Training a run folder: restore the run's GAN from its newest checkpoint, `fit` it with the
run's callbacks until the target step, and say what a start is doing until the first progress
line (the data found, the GAN built, the first step compiled).

Ctrl-C and SIGTERM (`kill`, a cluster's preemption) save a checkpoint and the interval's
metrics before `Stopped` propagates; weights that turned non-finite are never saved. Under
`multi_worker` a signal that reaches any worker stops all of them after the same step
(`AgreedStop`), and each exits with that signal's code.
Building the GAN is `training.building`'s; exporting it, `training.run_export`'s.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import functools
import math
import os
import pathlib
import signal
import sys
import warnings

import keras
import numpy as np
import tensorflow as tf

from training import callbacks, data
from training.building import restore_gan
from training.callbacks.agreed_stop import AgreedStop
from training.callbacks.checkpoints import weights_are_finite
from training.callbacks.metrics_csv import read_metrics
from training.callbacks.progress import FirstStepNotice
from training.callbacks.steps import generator_step
from training.distribute import gather_across_workers, make_strategy
from training.errors import DataError, RunFolderError, Stopped, is_disk_full
from training.gan import GAN
from training.inception import ExtractorError, make_extractor
from training.presets import TrainConfig
from training.runs import write_config
from training.signals import SignalHandlers, StopRequest, raise_stopped

# The start-up phases and "Resuming ...": on stdout with the progress lines, flushed, so that
# they show at once when stdout is a pipe (`| tee`) too.
_say = functools.partial(print, flush=True)


@dataclasses.dataclass(frozen=True)
class TrainingResult:
    """How a `train` call ended: the trained `gan`, at `step`; `diverged` says why when the
    values went non-finite (training stopped; `checkpoint` is the last good one)."""

    gan: GAN
    step: int
    checkpoint: str | None
    diverged: str | None = None


def _fid_callback(config: TrainConfig, run_dir: pathlib.Path) -> callbacks.FIDCallback | None:
    """FID/IS/KID during training, or None with a note when no extractor can be loaded."""
    if not 0 < config.fid_every <= config.steps:  # no evaluation due: load no extractor
        return None
    try:
        extractor = make_extractor(config.extractor)
    except ExtractorError as error:  # e.g. an offline machine cannot download the graph
        print(f"note: FID/IS/KID disabled, the feature extractor is unavailable ({error}). "
              "Give --extractor PATH (the inception-2015-12-05 .tgz/.pb or a .keras model) "
              "or --fid-every 0.", file=sys.stderr)
        return None
    # The first images of the data's fixed, class-mixing order: the ones `fid_stats` and
    # `evaluate` use, so the FID logged in training is the one those commands compute.
    return callbacks.FIDCallback(
        lambda: data.load_images(**config.data_source()),
        extractor, every_n_steps=config.fid_every, num_samples=config.fid_samples,
        num_real=config.fid_real_samples, num_is_samples=config.is_samples,
        dataset_name=data.source_key(config.dataset, config.data_dir, config.image_size,
                                     config.crop_size, config.antialias), split=config.split,
        cache_dir=str(run_dir.parent / "fid_stats_cache"))


def check_data(config: TrainConfig) -> None:
    """Finds the run's images and says what was found (an archive is extracted, once), before
    the run folder is written; refuses more images per step than the data has.

    Raises:
        DataError: the images cannot be read, or are fewer than one step's batch.
    """
    num_images = data.report_source(**config.data_source(), say=_say)
    per_step = config.batch_size * config.n_dis
    if num_images is None or per_step <= num_images:
        return
    flags = f"--batch-size {config.batch_size}" + (
        f" x --n-dis {config.n_dis}" if config.n_dis > 1 else "")
    largest_batch = num_images // config.n_dis
    fix = (f"--batch-size at most {largest_batch:,}" if largest_batch
           else f"--n-dis at most {num_images:,}")
    raise DataError(f"{flags}: {per_step:,} images per generator step, more than the "
                    f"{num_images:,} the data has; give {fix}.")


def _gan_summary(config: TrainConfig) -> str:
    """The GAN of a configuration in a few words, e.g. `cnn, bssn c=1.2`."""
    if config.norm == "none":
        return f"{config.arch}, no normalization"
    return f"{config.arch}, {config.norm} c={config.scale:g}"


def _strategy_summary(strategy: tf.distribute.Strategy) -> str:
    """E.g. `MirroredStrategy (2 replicas)`."""
    replicas = strategy.num_replicas_in_sync
    name = type(strategy).__name__.lstrip("_")  # the default one is `_DefaultDistributionStrategy`
    return f"{name} ({replicas} replica{'s' if replicas > 1 else ''})"


def training_images(config: TrainConfig, count: int) -> np.ndarray:
    """The first `count` training images of the run's data (fewer if it has fewer), in [-1, 1]."""
    images = data.load_images(**config.data_source()).take(count)
    return np.stack(list(images.as_numpy_iterator()))


def diversity_reference(config: TrainConfig, num_images: int = 64) -> np.ndarray:
    """The fixed real batch the sample-diversity statistic is measured against: the first
    `num_images` training images of the run's data."""
    return training_images(config, num_images)


def _callbacks(config: TrainConfig, run_dir: pathlib.Path, saver: callbacks.CheckpointCallback,
               guard: callbacks.StopOnNonFiniteLoss, csv_logger: callbacks.MetricsCSVLogger,
               logged_rows: list[dict[str, float]]) -> list[keras.callbacks.Callback]:
    writer = tf.summary.create_file_writer(str(run_dir / "logs"))
    fid = _fid_callback(config, run_dir)
    return [
        # First: its "compiled in" line comes as soon as the first step ends.
        FirstStepNotice(),
        guard,
        callbacks.StopAtStep(config.steps),
        # Before the loggers, so that they record what these add to the logs.
        *([fid] if fid else []),
        callbacks.SampleGridCallback(run_dir / "samples", config.sample_every,
                                     seed=config.seed, summary_writer=writer),
        callbacks.SampleDiversityMonitor(diversity_reference(config), seed=config.seed,
                                         logged_rows=logged_rows),
        csv_logger,
        callbacks.StepScalarLogger(writer),
        callbacks.ProgressLine(config.steps),
        # Last: a step's checkpoint is written once its log row is.
        saver,
    ]


def train(config: TrainConfig, run_dir: pathlib.Path,
          resume_from: pathlib.Path | None = None,
          stop_request: StopRequest | None = None) -> TrainingResult:
    """Trains (or resumes) the run in `run_dir` to `config.steps` generator steps; call
    `check_data` first.

    Args:
        config: the run's settings.
        run_dir: the folder the run writes.
        resume_from: the run folder to resume from when it is not `run_dir` (a worker that
            is not the chief resumes from the chief's folder and writes a scratch one).
        stop_request: under `multi_worker`, where the caller's signal handler has noted a
            signal since the worker started (training stops on it with the others); by
            default, signals are noted from the first step on.

    Raises:
        CheckpointError: no checkpoint of the run restores.
        RunFolderError: the run is past `config.steps` already; the workers of a cluster
            resumed from different steps; the disk became full (the error names the last
            good checkpoint).
        Stopped: Ctrl-C or SIGTERM arrived; the state was saved first (unless non-finite).
    """
    # Our dataset is shuffled by the pipeline; fit's default shuffle=True has nothing to do.
    warnings.filterwarnings("ignore", message="`shuffle=True` was passed")
    strategy = make_strategy(config.strategy)
    _say(f"building the GAN ({_gan_summary(config)}) under {_strategy_summary(strategy)}")
    gan, checkpoint = restore_gan(config, run_dir, strategy, resume_from)
    step = checkpoint.step
    _check_workers_agree(config, strategy, step, resume_from or run_dir)
    if step > config.steps:
        raise RunFolderError(
            f"{resume_from or run_dir} is already at step {step}, past --steps {config.steps}. "
            f"Give --steps above {step} to train further, --out for a new run, or "
            "--export-only to export it.")
    with _disk_full_is_an_error(checkpoint, run_dir):
        return _train_from(gan, checkpoint, config, run_dir, resume_from, stop_request)


def _train_from(gan: GAN, checkpoint: callbacks.RunCheckpoint, config: TrainConfig,
                run_dir: pathlib.Path, resume_from: pathlib.Path | None,
                stop_request: StopRequest | None) -> TrainingResult:
    """`train` from the restored `checkpoint`, once nothing can refuse the run."""
    step = checkpoint.step
    # Only now: a configuration whose GAN cannot restore the checkpoints (--force with another
    # architecture) must not replace the one they were trained with.
    write_config(run_dir, config)
    if step:
        _say(f"Resuming {run_dir} from step {step} ({checkpoint.latest}).")
    if step == config.steps:
        _say(f"The run is at --steps {step} already: nothing to train.")
        return TrainingResult(gan, step, checkpoint.latest)
    guard = callbacks.StopOnNonFiniteLoss()
    saver = callbacks.CheckpointCallback(checkpoint, config.checkpoint_every, config.log_every,
                                         is_healthy=lambda: guard.triggered is None)
    csv_logger = callbacks.MetricsCSVLogger(run_dir / "metrics.csv")
    # The rows up to the checkpoint: the ones after it are trained again.
    logged_rows = [row for row in read_metrics((resume_from or run_dir) / "metrics.csv")
                   if row["step"] <= step]
    # A signal reaches one worker of a cluster: they stop together, at a step they agree on.
    agreed_stop = (AgreedStop(gan.distribute_strategy, stop_request or StopRequest())
                   if config.strategy == "multi_worker" else None)
    try:
        with SignalHandlers(agreed_stop.request.note if agreed_stop else raise_stopped):
            # Inside: this can take a while (the Inception graph).
            run_callbacks = _callbacks(config, run_dir, saver, guard, csv_logger, logged_rows)
            if agreed_stop:
                run_callbacks.append(agreed_stop)  # last: a due save before the step goes first
            step = _fit_to_next_log_row(gan, config, run_dir, step, run_callbacks)
            if not gan.stop_training:
                gan.fit(_train_dataset(config, run_dir, step), steps_per_epoch=config.log_every,
                        initial_epoch=step // config.log_every,
                        epochs=math.ceil(config.steps / config.log_every),
                        callbacks=run_callbacks, verbose=0)
            if agreed_stop:
                agreed_stop.check()  # a signal after the last step's check
    except Stopped as stop:
        _save_after_stop(checkpoint, gan, csv_logger, stop.signum)
        raise
    if saver.nonfinite_weights_step is not None:
        guard.triggered = (f"the weights became NaN or infinite by generator step "
                           f"{saver.nonfinite_weights_step}")
    return TrainingResult(gan, generator_step(gan), checkpoint.latest, guard.triggered)


@contextlib.contextmanager
def _disk_full_is_an_error(checkpoint: callbacks.RunCheckpoint, run_dir: pathlib.Path):
    """Turns a full disk into an error that names the last good checkpoint (a save cut short
    never becomes the latest: its state file is written last)."""
    try:
        yield
    except (OSError, tf.errors.ResourceExhaustedError) as error:
        if not is_disk_full(error):
            raise
        last = checkpoint.latest or "none yet (a rerun starts at step 0)"
        raise RunFolderError(
            f"the disk of {run_dir} is full ({os.strerror(errno.ENOSPC)}). The last good "
            f"checkpoint is {last}; free some space and run the same command to resume."
        ) from None


def _train_dataset(config: TrainConfig, run_dir: pathlib.Path, step: int) -> tf.data.Dataset:
    """The run's training batches from generator `step` on (one batch per step)."""
    return data.make_train_dataset(
        **config.data_source(), batch_size=config.batch_size * config.n_dis,
        seed=config.seed, shuffle_buffer=config.shuffle_buffer, start_batch=step,
        skipped_log=run_dir / "skipped_images.log")


class _TrainEndOnlyIfStopped(keras.callbacks.CallbackList):
    """Callbacks of a `fit` that another `fit` continues: their train end (a final grid, a
    final checkpoint) runs only if this one stopped the training."""

    def on_train_end(self, logs=None):
        if self.model.stop_training:
            super().on_train_end(logs)


def _fit_to_next_log_row(gan: GAN, config: TrainConfig, run_dir: pathlib.Path, step: int,
                         run_callbacks: list[keras.callbacks.Callback]) -> int:
    """Trains a run resumed between two log rows (a Ctrl-C save) up to the next row, so that
    its rows, and the intervals they average, fall on the steps of an uninterrupted run's;
    returns the step reached. `fit` starts a log row every `steps_per_epoch` steps from where
    it starts, so this takes a `fit` of its own; the data continue in the next one."""
    steps_to_row = -step % config.log_every
    if not steps_to_row:
        return step
    epoch = step // config.log_every
    gan.fit(_train_dataset(config, run_dir, step), steps_per_epoch=steps_to_row,
            initial_epoch=epoch, epochs=epoch + 1, verbose=0,
            callbacks=_TrainEndOnlyIfStopped(run_callbacks, add_history=True, model=gan))
    return generator_step(gan)


def _check_workers_agree(config: TrainConfig, strategy: tf.distribute.Strategy, step: int,
                         run_dir: pathlib.Path) -> None:
    """Refuses to train when the workers of a cluster restored different steps: their weights
    would differ, and the all-reduced updates would silently train neither."""
    if config.strategy != "multi_worker":
        return
    steps = sorted(set(gather_across_workers(strategy, step)))
    if len(steps) > 1:
        raise RunFolderError(
            f"the workers resumed {run_dir} from different steps ({', '.join(map(str, steps))})"
            ": every worker must read the chief's run folder. Give all workers the same --out "
            "on a filesystem they share.")


def _save_after_stop(checkpoint: callbacks.RunCheckpoint, gan: GAN,
                     csv_logger: callbacks.MetricsCSVLogger, signum: int) -> None:
    """Saves the state a Ctrl-C or SIGTERM stopped at (when its weights are finite)."""
    name = signal.Signals(signum).name
    with SignalHandlers(signal.SIG_IGN):  # a second Ctrl-C cannot cut the save short
        if weights_are_finite(gan):
            print(f"\nStopped by {name} at step {checkpoint.step}; saving a checkpoint "
                  "(further Ctrl-C is ignored until it is written)...", file=sys.stderr,
                  flush=True)
            csv_logger.write_partial_row()
            print(f"Saved {checkpoint.save()}. Run the same command to resume.",
                  file=sys.stderr)
        else:
            print(f"\nStopped by {name} at step {checkpoint.step}; the weights are not "
                  f"finite, so nothing was saved. The last good checkpoint is "
                  f"{checkpoint.latest}.", file=sys.stderr)
