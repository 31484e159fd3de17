"""FIDCallback in short `fit` runs of a stand-in GAN, and the evaluation it is built on."""

import csv
import math

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import ops

from tests.training.fid_testing import (
    LATENT_DIM,
    random_images,
    tiny_feature_model,
    tiny_generator,
)
from training import metrics
from training.callbacks import FIDCallback
from training.evaluation import (
    RealStatistics,
    evaluate_generator,
    real_statistics_cache_path,
    sample_latents,
)
from training.inception import FEATURES, PROBS, ModelExtractor
from tests.strategies import two_cpu_strategy

SCORES = ["fid", "is_mean", "is_std", "kid", "kid_std"]
TINY_PROTOCOL = dict(
    num_samples=32, num_real=40, num_is_samples=20, is_splits=2, kid_subsets=4,
    kid_subset_size=16, verbose=0,
)


class StandInGAN(keras.Model):
    """What FIDCallback needs of the project's GAN: `latent_dim`, `generator` and maybe
    `prepare_sampling_generator()`; training changes nothing, so every evaluation must
    agree."""

    def __init__(self):
        super().__init__()
        self.latent_dim = LATENT_DIM
        self.generator = tiny_generator()
        self.built = True  # the generators come built; `fit` need not probe `call`

    def train_step(self, data):
        return {"loss": ops.mean(data)}


class StandInEMAGAN(StandInGAN):
    """A stand-in GAN whose `prepare_sampling_generator()` returns `ema_generator`."""

    def __init__(self, ema_generator):
        super().__init__()
        self.ema_generator = ema_generator

    def prepare_sampling_generator(self):
        return self.ema_generator


class UnusableGenerator(keras.layers.Layer):
    def call(self, latents):
        raise AssertionError("the callback must use the sampling generator when there is one")


def _real_images():
    return tf.data.Dataset.from_tensor_slices(random_images(48, seed=1))


def _extractor():
    return ModelExtractor(tiny_feature_model(), name="tiny", batch_size=16)


def _fit(model, callbacks, epochs, steps=4, steps_per_execution=1):
    with model.distribute_strategy.scope():
        model.compile(steps_per_execution=steps_per_execution)
    data = tf.data.Dataset.from_tensor_slices(random_images(8 * steps, seed=2)).batch(8)
    model.fit(data, epochs=epochs, callbacks=callbacks, shuffle=False, verbose=0)


def _csv_rows(path):
    with open(path, newline="") as file:
        return list(csv.DictReader(file))


def test_scores_land_in_every_csv_row_and_history(tmp_path):
    model = StandInGAN()
    fid = FIDCallback(_real_images(), _extractor(), dataset_name="toy",
                      cache_dir=str(tmp_path), **TINY_PROTOCOL)

    _fit(model, [fid, keras.callbacks.CSVLogger(tmp_path / "log.csv")], epochs=2)

    rows = _csv_rows(tmp_path / "log.csv")
    assert len(rows) == 2 and set(SCORES) <= set(rows[0])
    assert all(math.isfinite(float(row[name])) for row in rows for name in SCORES)
    assert [entry["epoch"] for entry in fid.history] == [0, 1]
    assert model.history.history["fid"] == [entry["fid"] for entry in fid.history]
    # Same latents every evaluation and an unchanged generator: identical scores.
    assert fid.history[0] == {**fid.history[1], "epoch": 0, "step": 4}
    assert (tmp_path / "toy-train-tiny-40.npz").is_file()


def test_epochs_without_an_evaluation_log_nan_so_csv_columns_exist_from_the_start(tmp_path):
    fid = FIDCallback(_real_images(), _extractor(), every_n_epochs=2, **TINY_PROTOCOL)

    _fit(StandInGAN(), [fid, keras.callbacks.CSVLogger(tmp_path / "log.csv")], epochs=3)

    rows = _csv_rows(tmp_path / "log.csv")
    evaluated = [[math.isfinite(float(row[name])) for name in SCORES] for row in rows]
    assert evaluated == [[False] * 5, [True] * 5, [False] * 5]
    assert [entry["epoch"] for entry in fid.history] == [1]


def test_step_evaluations_count_batches_across_epochs_and_reach_the_epoch_logs():
    fid = FIDCallback(_real_images(), _extractor(), every_n_steps=3, **TINY_PROTOCOL)
    model = StandInGAN()

    _fit(model, [fid], epochs=2, steps=4)

    assert [(entry["epoch"], entry["step"]) for entry in fid.history] == [(0, 3), (1, 6)]
    assert model.history.history["kid"] == [entry["kid"] for entry in fid.history]


def test_step_evaluations_happen_when_a_multiple_is_passed_with_steps_per_execution():
    fid = FIDCallback(_real_images(), _extractor(), every_n_steps=3, **TINY_PROTOCOL)

    _fit(StandInGAN(), [fid], epochs=2, steps=4, steps_per_execution=2)  # reports 2, 4, 6, 8

    assert [entry["step"] for entry in fid.history] == [4, 6]


def test_the_sampling_generator_is_scored_when_the_model_has_one():
    sampling_generator = tiny_generator("ema_generator")
    model = StandInEMAGAN(sampling_generator)
    model.generator = UnusableGenerator()
    fid = FIDCallback(_real_images(), _extractor(), **TINY_PROTOCOL)

    _fit(model, [fid], epochs=1)

    expected = evaluate_generator(
        sampling_generator, LATENT_DIM, fid.extractor, fid.real_statistics(),
        num_samples=32, num_is_samples=20, is_splits=2, kid_subsets=4, kid_subset_size=16,
    )
    assert fid.history[0]["fid"] == pytest.approx(expected["fid"], rel=1e-6)


def test_cached_real_statistics_are_reused_without_loading_the_data(tmp_path):
    settings = dict(dataset_name="toy", split="test", cache_dir=str(tmp_path), **TINY_PROTOCOL)
    first = FIDCallback(_real_images, _extractor(), **settings).real_statistics()

    def data_must_not_load():
        raise AssertionError("the cached statistics should have been used")

    second = FIDCallback(data_must_not_load, _extractor(), **settings).real_statistics()

    np.testing.assert_allclose(second.sigma, first.sigma)
    np.testing.assert_allclose(second.features, first.features, rtol=1e-6)
    assert first.features.shape == (40, 6)
    path = real_statistics_cache_path(str(tmp_path), "toy", "test", "tiny", 40)
    np.testing.assert_allclose(metrics.load_statistics(path)[0], first.mu)


def test_evaluation_runs_on_the_models_distribution_strategy():
    strategy = two_cpu_strategy()
    with strategy.scope():
        model = StandInGAN()
    fid = FIDCallback(_real_images(), _extractor(), **TINY_PROTOCOL)

    _fit(model, [fid], epochs=1)

    single_device = evaluate_generator(
        model.generator, LATENT_DIM, fid.extractor, fid.real_statistics(),
        num_samples=32, num_is_samples=20, is_splits=2, kid_subsets=4, kid_subset_size=16,
    )
    assert fid.history[0]["fid"] == pytest.approx(single_device["fid"], rel=1e-5)
    assert fid.history[0]["is_mean"] == pytest.approx(single_device["is_mean"], rel=1e-5)


def test_evaluate_generator_scores_the_first_samples_of_one_latent_draw():
    generator, extractor = tiny_generator(), _extractor()
    real = RealStatistics(*_fit_gaussian(random_images(40, seed=3), extractor))

    scores = evaluate_generator(
        generator, LATENT_DIM, extractor, real, num_samples=24, num_is_samples=30,
        is_splits=3, seed=5,
    )

    outputs = extractor(generator(sample_latents(30, LATENT_DIM, seed=5)))
    fake = metrics.FeatureStatistics()
    fake.update(outputs[FEATURES][:24])
    assert scores.keys() == {"fid", "is_mean", "is_std"}  # no real features: no KID
    expected_fid = metrics.frechet_distance(*fake.result(), real.mu, real.sigma)
    assert scores["fid"] == pytest.approx(expected_fid)
    assert (scores["is_mean"], scores["is_std"]) == pytest.approx(
        metrics.inception_score(outputs[PROBS], splits=3)
    )


def _fit_gaussian(images, extractor):
    statistics = metrics.FeatureStatistics()
    statistics.update(extractor(images)[FEATURES])
    return statistics.result()


def test_a_features_only_extractor_logs_no_inception_score(tmp_path):
    images = keras.Input((8, 8, 3))
    features_only = ModelExtractor(
        keras.Model(images, keras.layers.GlobalAveragePooling2D()(images)), name="means"
    )
    fid = FIDCallback(_real_images(), features_only, **TINY_PROTOCOL)

    _fit(StandInGAN(), [fid, keras.callbacks.CSVLogger(tmp_path / "log.csv")], epochs=1)

    columns = set(_csv_rows(tmp_path / "log.csv")[0])
    assert {"fid", "kid", "kid_std"} <= columns and not {"is_mean", "is_std"} & columns


def test_the_evaluation_schedule_is_validated():
    with pytest.raises(ValueError, match="not both"):
        FIDCallback(_real_images(), _extractor(), every_n_epochs=1, every_n_steps=10)
    with pytest.raises(ValueError, match="every_n_steps must be >= 1"):
        FIDCallback(_real_images(), _extractor(), every_n_steps=0)
