"""A stand-in for our GAN, and the worker process of the multi-worker tests.

The stand-in has the shape of `training.gan.GAN`: a `keras.Model` holding a generator and a
discriminator, a custom `compile(d_optimizer, g_optimizer)`, a `train_step` with two
`tf.GradientTape`s, hinge losses divided by the global batch, per-replica latents, and
`keras.metrics.Mean` trackers returned with an extra scalar.

Run with TF_CONFIG set (`python -m tests.training.multiworker_worker` from the repository
root), it is one worker of a `MultiWorkerMirroredStrategy` cluster: it trains the stand-in,
and a classifier fit on (x, y) batches, with `fit` and saves their final weights and last
logs (`--output`, .npz). With `--expect-upstream-failures` it instead runs Keras's own `fit`
without `MultiWorkerFitMixin` and prints how it fails, as one JSON line after FAILURES_TAG.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from training.distribute import (  # noqa: E402
    MultiWorkerFitMixin,
    global_batch_loss,
    make_strategy,
    replica_latents,
)

GLOBAL_BATCH = 8
LATENT_DIM = 4
IMAGE_DIM = 8
SEED = 7
STEPS = 3
FAILURES_TAG = "UPSTREAM_FAILURES "


class PlainStandInGAN(keras.Model):
    """The stand-in GAN, as Keras alone would train it: without `MultiWorkerFitMixin`."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.generator = keras.Sequential(
            [keras.Input((LATENT_DIM,)), keras.layers.Dense(IMAGE_DIM)], name="generator")
        self.discriminator = keras.Sequential(
            [keras.Input((IMAGE_DIM,)), keras.layers.Dense(1)], name="discriminator")
        self.d_loss_tracker = keras.metrics.Mean(name="d_loss")
        self.g_loss_tracker = keras.metrics.Mean(name="g_loss")

    def compile(self, d_optimizer, g_optimizer, **kwargs):
        super().compile(**kwargs)
        self.d_optimizer = d_optimizer
        self.g_optimizer = g_optimizer

    @property
    def metrics(self):
        return [self.d_loss_tracker, self.g_loss_tracker]

    def call(self, latents, training=False):
        return self.generator(latents, training=training)

    def train_step(self, real):
        batch = tf.shape(real)[0]
        global_batch = batch * self.distribute_strategy.num_replicas_in_sync

        latents = replica_latents(batch, LATENT_DIM, (SEED, 0), self.d_optimizer.iterations)
        with tf.GradientTape() as tape:
            real_logits = self.discriminator(real, training=True)
            fake_logits = self.discriminator(self.generator(latents, training=True),
                                             training=True)
            d_per_example = tf.nn.relu(1.0 - real_logits) + tf.nn.relu(1.0 + fake_logits)
            d_loss = global_batch_loss(d_per_example, global_batch)
        weights = self.discriminator.trainable_weights
        self.d_optimizer.apply_gradients(zip(tape.gradient(d_loss, weights), weights))

        latents = replica_latents(batch, LATENT_DIM, (SEED, 1), self.g_optimizer.iterations)
        with tf.GradientTape() as tape:
            g_per_example = -self.discriminator(self.generator(latents, training=True))
            g_loss = global_batch_loss(g_per_example, global_batch)
        weights = self.generator.trainable_weights
        self.g_optimizer.apply_gradients(zip(tape.gradient(g_loss, weights), weights))

        self.d_loss_tracker.update_state(d_per_example)
        self.g_loss_tracker.update_state(g_per_example)
        logs = {m.name: m.result() for m in self.metrics}
        logs["d_kernel_norm"] = tf.norm(self.discriminator.layers[-1].kernel)
        return logs


class StandInGAN(MultiWorkerFitMixin, PlainStandInGAN):
    """The stand-in GAN as our GAN is declared."""

    def optimizer_variables(self):
        return [(self.d_optimizer, self.discriminator.trainable_variables),
                (self.g_optimizer, self.generator.trainable_variables)]


class Classifier(MultiWorkerFitMixin, keras.Sequential):
    """A plain model fit on (x, y) batches, the pattern of keras-team/keras#20585."""


def initial_weights(*shapes: tuple[int, ...]) -> list[np.ndarray]:
    """Weights of the given shapes (default: the GAN's), the same in every process."""
    rng = np.random.default_rng(SEED)
    shapes = shapes or [(LATENT_DIM, IMAGE_DIM), (IMAGE_DIM,), (IMAGE_DIM, 1), (1,)]
    return [(0.5 * rng.standard_normal(shape)).astype("float32") for shape in shapes]


def make_gan(cls: type = StandInGAN) -> keras.Model:
    """A compiled stand-in GAN with `initial_weights`; create it in the strategy's scope."""
    gan = cls()
    gan.set_weights(initial_weights())
    gan.compile(d_optimizer=keras.optimizers.Adam(0.01, beta_1=0.5),
                g_optimizer=keras.optimizers.Adam(0.01, beta_1=0.5))
    return gan


def make_classifier(cls: type = Classifier) -> keras.Model:
    """A compiled two-class linear classifier; create it in the strategy's scope."""
    classifier = cls([keras.Input((IMAGE_DIM,)), keras.layers.Dense(2)])
    classifier.set_weights(initial_weights((IMAGE_DIM, 2), (2,)))
    classifier.compile(keras.optimizers.SGD(0.1, momentum=0.9),
                       keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                       metrics=["accuracy"])
    return classifier


def image_dataset() -> tf.data.Dataset:
    """Batches of GLOBAL_BATCH 'images' (vectors), repeated."""
    images = np.random.default_rng(SEED + 1).standard_normal((4 * GLOBAL_BATCH, IMAGE_DIM))
    return tf.data.Dataset.from_tensor_slices(images.astype("float32")).repeat().batch(
        GLOBAL_BATCH, drop_remainder=True)


def labelled_dataset() -> tf.data.Dataset:
    """`image_dataset` with labels: (x, whether x[0] > 0) batches."""
    return image_dataset().map(lambda x: (x, tf.cast(x[:, 0] > 0, tf.int32)))


def train(model: keras.Model, dataset: tf.data.Dataset) -> dict[str, np.ndarray]:
    """Trains `model` with `fit` for STEPS steps: its final weights and last logs, by name."""
    history = model.fit(dataset, steps_per_epoch=STEPS, epochs=1, verbose=0, shuffle=False)
    result = {f"weight_{i}": weight for i, weight in enumerate(model.get_weights())}
    result.update({f"log_{name}": np.asarray(values[-1])
                   for name, values in history.history.items()})
    return result


def train_both(strategy: tf.distribute.Strategy) -> dict[str, np.ndarray]:
    """Trains the stand-in GAN and the classifier under `strategy`; their `train` results."""
    with strategy.scope():
        gan, classifier = make_gan(), make_classifier()
    results = {f"gan_{key}": value for key, value in train(gan, image_dataset()).items()}
    results.update({f"classifier_{key}": value
                    for key, value in train(classifier, labelled_dataset()).items()})
    return results


def _upstream_failures(strategy: tf.distribute.Strategy) -> dict[str, dict]:
    """How Keras's own `fit` fails under `strategy`, without `MultiWorkerFitMixin`."""
    keras.config.disable_traceback_filtering()  # keep Keras's frames, to name the culprit
    with strategy.scope():
        classifier = make_classifier(keras.Sequential)
        gan = make_gan(PlainStandInGAN)
        gan(tf.zeros((1, LATENT_DIM)))  # built, so that Keras does not call it on images
    return {"(x, y) batches": _fit_error(classifier, labelled_dataset()),
            "GAN": _fit_error(gan, image_dataset())}


def _fit_error(model: keras.Model, dataset: tf.data.Dataset) -> dict:
    """The error `fit` raises: its message's first line and the Keras functions it went through."""
    try:
        model.fit(dataset, steps_per_epoch=STEPS, epochs=1, verbose=0, shuffle=False)
    except Exception as error:  # noqa: BLE001 -- reported to the test, which judges it
        frames = traceback.extract_tb(error.__traceback__)
        return {"error": f"{type(error).__name__}: {str(error).strip().splitlines()[0]}",
                "keras_functions": [frame.name for frame in frames
                                    if f"{os.sep}keras{os.sep}" in frame.filename]}
    return {"error": None, "keras_functions": []}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", help="where to save the weights and logs (.npz)")
    parser.add_argument("--expect-upstream-failures", action="store_true")
    args = parser.parse_args(argv)

    strategy = make_strategy("multi_worker")  # first: it sets up the collective runtime
    if args.expect_upstream_failures:
        print(FAILURES_TAG + json.dumps(_upstream_failures(strategy)), flush=True)
        return 0
    np.savez(args.output, **train_both(strategy))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
