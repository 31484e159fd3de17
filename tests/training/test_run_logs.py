"""metrics.csv and the progress line: what a person reads of a run."""

import csv
import io

import keras
import numpy as np
import pytest
import tensorflow as tf

from training.callbacks import CheckpointCallback, MetricsCSVLogger, ProgressLine, RunCheckpoint
from training.callbacks.metrics_csv import read_metrics
from training.callbacks.steps import generator_step
from training.callbacks.progress import format_duration
from training.gan import GAN


class _Run:
    """Stands in for a GAN: only its generator step counter."""

    weights = ()

    def __init__(self):
        self.step = keras.Variable(0, dtype="int64")

    def at(self, step):
        self.step.assign(step)
        return self

    def reset_metrics(self):
        """Stands in for `keras.Model.reset_metrics`: it has no metrics."""


def _rows(path):
    with open(path, newline="") as file:
        return list(csv.DictReader(file))


def test_metrics_csv_has_step_first_and_rewrites_its_header_for_new_columns(tmp_path):
    path = tmp_path / "metrics.csv"
    run = _Run()
    logger = MetricsCSVLogger(path)
    logger.set_model(run.at(100))
    logger.on_epoch_end(0, {"d_loss": 1.5, "sigma/conv1": 0.9, "images": np.zeros((2, 2))})
    # A resumed run with another normalization logs a column the file lacks.
    resumed = MetricsCSVLogger(path)
    resumed.set_model(run.at(200))
    resumed.on_epoch_end(0, {"d_loss": 1.25, "sigma/conv1_view1": 0.8})
    with open(path) as file:
        header = file.readline().strip().split(",")
    assert header == ["step", "d_loss", "sigma/conv1", "sigma/conv1_view1"]
    rows = _rows(path)
    assert [(row["step"], row["d_loss"]) for row in rows] == [("100", "1.5"), ("200", "1.25")]
    assert rows[0]["sigma/conv1_view1"] == "" and rows[1]["sigma/conv1"] == ""


class _Clock:
    """Stands in for `time.monotonic`: seconds move only when the test says."""

    def __init__(self):
        self.now = 5000.0

    def __call__(self):
        return self.now


@pytest.fixture
def clock(monkeypatch) -> _Clock:
    clock = _Clock()
    monkeypatch.setattr("training.callbacks.progress.time.monotonic", clock)
    return clock


def _started_progress_line(run: _Run) -> tuple[ProgressLine, io.StringIO]:
    stream = io.StringIO()
    progress = ProgressLine(4000, stream=stream)
    progress.set_model(run)
    progress.on_train_begin()
    return progress, stream


def test_progress_line_shows_step_speed_eta_and_the_key_scalars(clock):
    run = _Run().at(1000)
    progress, stream = _started_progress_line(run)
    clock.now += 100.0  # 1000 steps in 100 s
    run.at(2000)
    progress.on_epoch_end(0, {"d_loss": 1.234, "g_loss": 0.5, "d_real": 0.8, "d_fake": -0.6,
                              "diversity": 0.71, "sigma/conv1": 1.0})
    line = stream.getvalue()
    assert line.startswith("step 2000/4000 (50%) | 10.00 steps/s | elapsed 1:40 | ETA 3:20 | ")
    assert "d_loss 1.23 g_loss 0.5 D(real) 0.8 D(fake) -0.6 diversity 0.71" in line
    assert "sigma" not in line and line.endswith("\n")
    assert format_duration(3725) == "1:02:05"


def test_progress_line_counts_from_its_first_fit_when_a_second_continues_the_run(clock):
    run = _Run().at(1000)
    progress, stream = _started_progress_line(run)
    clock.now += 50.0
    run.at(1500)
    progress.on_train_begin()  # the run goes on in another fit: the same clock
    clock.now += 50.0
    run.at(2000)
    progress.on_epoch_end(0, {})
    assert stream.getvalue().startswith("step 2000/4000 (50%) | 10.00 steps/s | elapsed 1:40")


def test_metrics_csv_keeps_the_running_means_of_an_interval_cut_short(tmp_path):
    path = tmp_path / "metrics.csv"
    run = _Run()
    logger = MetricsCSVLogger(path)
    logger.set_model(run.at(100))
    logger.on_epoch_end(0, {"d_loss": 1.5})
    logger.write_partial_row()  # nothing new since the row of step 100
    logger.on_train_batch_end(36, {"d_loss": 0.75})
    logger.set_model(run.at(137))
    logger.write_partial_row()
    assert [(row["step"], row["d_loss"]) for row in _rows(path)] == [("100", "1.5"),
                                                                      ("137", "0.75")]


class _Checkpoint:
    """Stands in for a `RunCheckpoint`: records the steps of metrics.csv's rows at each save."""

    def __init__(self, run: _Run, metrics_path):
        self.run, self.metrics_path = run, metrics_path
        self.saved_step = None
        self.rows_at_save: dict[int, list[int]] = {}

    @property
    def step(self) -> int:
        return generator_step(self.run)

    def save(self) -> None:
        self.saved_step = self.step
        self.rows_at_save[self.step] = [row["step"] for row in read_metrics(self.metrics_path)]


def test_a_steps_checkpoint_is_saved_after_its_log_row(tmp_path):
    # A crash between the two must not leave a checkpoint of a step whose row is missing:
    # the resumed run would start after it and never write that row.
    run = _Run()
    logger = MetricsCSVLogger(tmp_path / "metrics.csv")
    checkpoint = _Checkpoint(run, tmp_path / "metrics.csv")
    saver = CheckpointCallback(checkpoint, every_n_steps=2, log_every=2)
    for callback in (logger, saver):  # the saver last, as the training lists it
        callback.set_model(run.at(2))
        callback.on_train_batch_end(1, {"d_loss": 1.0})
    assert checkpoint.rows_at_save == {}
    for callback in (logger, saver):  # the epoch's (log interval's) end
        callback.on_epoch_end(0, {"d_loss": 1.0})
    assert checkpoint.rows_at_save == {2: [2]}
    run.at(4)
    saver.on_train_batch_end(1, {})  # mid-interval: saved when the next step starts
    assert 4 not in checkpoint.rows_at_save
    saver.on_train_batch_begin(2)
    assert checkpoint.rows_at_save[4] == [2]


def _small_gan(step: int) -> GAN:
    """A compiled GAN of two small networks, at generator step `step`."""
    generator = keras.Sequential([keras.Input((4,)), keras.layers.Dense(12),
                                  keras.layers.Reshape((2, 2, 3))])
    discriminator = keras.Sequential([keras.Input((2, 2, 3)), keras.layers.Flatten(),
                                      keras.layers.Dense(1)])
    gan = GAN(generator, discriminator)
    gan.compile(d_optimizer=keras.optimizers.Adam(), g_optimizer=keras.optimizers.Adam())
    gan.step.assign(step)
    return gan


def _metric_states(gan: GAN) -> dict[str, list[float]]:
    """Each metric's running total and count."""
    return {metric.name: [float(variable.value) for variable in metric.variables]
            for metric in gan.metrics}


def _resume(checkpoint_dir, log_every: int) -> tuple[GAN, CheckpointCallback]:
    """A GAN restored from `checkpoint_dir`, and the first epoch of its `fit` begun."""
    gan = _small_gan(0)
    checkpoint = RunCheckpoint(gan, checkpoint_dir)
    checkpoint.restore()
    saver = CheckpointCallback(checkpoint, every_n_steps=1, log_every=log_every)
    saver.set_model(gan)
    gan.reset_metrics()  # as `fit` does at each epoch's start
    saver.on_epoch_begin(checkpoint.step // log_every)
    return gan, saver


def test_a_resume_between_two_log_rows_continues_the_running_means_of_the_interval(tmp_path):
    gan = _small_gan(3)  # between the rows of steps 2 and 4
    for index, metric in enumerate(gan.metrics):
        metric.update_state([index / 3, 2.0 * index + 0.1])
    RunCheckpoint(gan, tmp_path).save()
    # The row of step 4 averages steps 3 and 4, as an uninterrupted run's does.
    resumed, _ = _resume(tmp_path, log_every=2)
    assert _metric_states(resumed) == _metric_states(gan)
    assert all(count == 2 for _, count in _metric_states(resumed).values())


def test_a_save_on_a_log_row_holds_an_empty_interval(tmp_path):
    gan = _small_gan(4)
    saver = CheckpointCallback(RunCheckpoint(gan, tmp_path), every_n_steps=2, log_every=2)
    saver.set_model(gan)
    for metric in gan.metrics:
        metric.update_state([1.0, 2.0])
    saver.on_epoch_end(1)  # the row of step 4 is written, then its checkpoint saved
    # Resumed with another --log-every, where step 4 falls between two rows: the row of
    # step 6 averages steps 5 and 6, not the interval the row of step 4 averaged.
    resumed, _ = _resume(tmp_path, log_every=3)
    assert all(state == [0.0, 0.0] for state in _metric_states(resumed).values())


def test_a_checkpoint_of_an_earlier_version_resumes_and_says_its_next_row_is_short(
        tmp_path, capsys):
    gan = _small_gan(3)
    RunCheckpoint(gan, tmp_path / "built")  # builds the optimizers
    earlier = tf.train.Checkpoint(gan=gan, d_optimizer=gan.d_optimizer,
                                  g_optimizer=gan.g_optimizer)  # without the running means
    tf.train.CheckpointManager(earlier, tmp_path, max_to_keep=3).save(checkpoint_number=3)
    resumed, saver = _resume(tmp_path, log_every=2)
    assert saver.checkpoint.step == 3
    np.testing.assert_array_equal(resumed.generator.get_weights()[0],
                                  gan.generator.get_weights()[0])
    assert ("holds no running means of its log interval (an earlier version saved it, or "
            "other metrics): the row of step 4 averages only the steps after 3."
            in capsys.readouterr().err)


class _PoisonWeightsAt(keras.callbacks.Callback):
    """Turns the model's weights to NaN at the end of one step (an overflowing update)."""

    def __init__(self, step: int):
        super().__init__()
        self.step = step

    def on_train_batch_end(self, batch, logs=None):
        if generator_step(self.model) == self.step:
            for weight in self.model.weights:
                weight.assign(keras.ops.full(weight.shape, np.nan))


class _CountingModel(keras.Sequential):
    """A model whose optimizer counts the steps the callbacks read."""

    @property
    def step(self):
        return self.optimizer.iterations


def test_weights_found_non_finite_at_a_checkpoint_stop_the_training_at_that_step(tmp_path):
    model = _CountingModel([keras.Input((1,)), keras.layers.Dense(1)], name="counting")
    model.compile(optimizer="sgd", loss="mse")
    checkpoint = _Checkpoint(model, tmp_path / "metrics.csv")
    saver = CheckpointCallback(checkpoint, every_n_steps=3, log_every=4)
    # A checkpoint step (3) inside a log interval (4 steps), where `fit` cannot stop before
    # the next step unless the weights are checked at the step's end.
    model.fit(np.zeros((64, 1)), np.zeros((64, 1)), batch_size=1, steps_per_epoch=4,
              epochs=2, verbose=0, callbacks=[_PoisonWeightsAt(3), saver])
    assert saver.nonfinite_weights_step == 3
    assert generator_step(model) == 3
    assert checkpoint.rows_at_save == {}


class _Sampler(_Run):
    """Stands in for a GAN with a sampling generator that counts its calls."""

    latent_dim = 4

    def __init__(self):
        super().__init__()
        self.ema_generator = keras.Sequential([keras.Input((4,)), keras.layers.Dense(12),
                                               keras.layers.Reshape((2, 2, 3))])

    def prepare_sampling_generator(self):
        return self.ema_generator


def test_sample_grids_come_early_and_then_at_the_interval(tmp_path):
    from training.callbacks import SampleGridCallback

    model = _Sampler()
    grids = SampleGridCallback(tmp_path, every_n_steps=1000, num_images=4)
    grids.set_model(model.at(0))
    grids.on_train_begin()
    for step in range(1, 2001):
        model.at(step)
        grids.on_train_batch_end(step - 1)
    assert sorted(path.name for path in tmp_path.glob("*.png")) == [
        f"step_{step:07d}.png" for step in (0, 100, 250, 500, 1000, 2000)]
