"""A small image classifier whose penultimate layer is a feature space for Fréchet distances.

The Inception network of published FIDs cannot be downloaded on every machine. A compact CNN
trained on the data set's own labelled images gives a feature space of the data's classes
instead: the Fréchet distance in it ranks generators by how much their samples look like the
data, at a fraction of Inception's cost. Its numbers are comparable only with others in the
same model's features, never with published FIDs.

`build_classifier` makes the network, `train_classifier` trains it and measures its
accuracy, and `save_classifier` writes it as a `.keras` model with the outputs
`[features, logits]` that `training.inception.ModelExtractor` (`--extractor PATH.keras`)
reads, with its accuracy beside it in a `.json` file.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from training.data.labelled import LabelledImages
from training.data.preprocessing import to_unit_range
from training.images import atomic_writer

# Filters of the three conv blocks; each halves the side, so 32x32 images end at 4x4.
_BLOCK_FILTERS = (32, 64, 128)


@dataclasses.dataclass(frozen=True)
class Accuracy:
    """The share of correctly classified images of each split, in inference mode."""

    train: float
    test: float


def build_classifier(image_size: int, num_classes: int, feature_size: int = 256
                     ) -> keras.Model:
    """A compact CNN from images in [-1, 1] to `[features, logits]`.

    Three blocks of 3x3 convolution, BatchNorm, ReLU and 2x2 max pooling (32, 64 and 128
    filters), then a dense layer of `feature_size` units (the features, before their
    ReLU) and the logits.

    Args:
        image_size: side of the square RGB input images.
        num_classes: number of classes.
        feature_size: width of the feature layer.

    Returns:
        An uncompiled `keras.Model` with two outputs.

    Example:

    ```python
    model = build_classifier(32, 10)
    features, logits = model(np.zeros((2, 32, 32, 3), "float32"))
    assert features.shape == (2, 256) and logits.shape == (2, 10)
    ```
    """
    images = keras.Input((image_size, image_size, 3), name="images")
    hidden = images
    for index, filters in enumerate(_BLOCK_FILTERS, start=1):
        hidden = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False,
                                     name=f"conv{index}")(hidden)
        # Momentum 0.9, not Keras's 0.99: the moving statistics must settle within the
        # few hundred steps of a short training.
        hidden = keras.layers.BatchNormalization(momentum=0.9, name=f"bn{index}")(hidden)
        hidden = keras.layers.ReLU(name=f"relu{index}")(hidden)
        hidden = keras.layers.MaxPooling2D(name=f"pool{index}")(hidden)
    hidden = keras.layers.Flatten(name="flatten")(hidden)
    # The features are taken before their ReLU: a unit that is off for every image (there
    # are some) would leave the features' covariance singular, and FID unreliable.
    features = keras.layers.Dense(feature_size, name="features")(hidden)
    activated = keras.layers.ReLU(name="features_relu")(features)
    logits = keras.layers.Dense(num_classes, name="logits")(activated)
    return keras.Model(images, [features, logits], name="feature_classifier")


def train_classifier(train: LabelledImages, test: LabelledImages, epochs: int,
                     batch_size: int = 128, seed: int = 0, feature_size: int = 256,
                     verbose: int = 2) -> tuple[keras.Model, Accuracy]:
    """Trains `build_classifier` on `train` (Adam, cosine-decayed learning rate, random
    horizontal flips) and measures its accuracy on both splits.

    Args:
        train: the training images and labels.
        test: held-out images of the same classes.
        epochs: passes over `train`.
        batch_size: images per step.
        seed: seed of the initialization, the shuffling and the flips.
        feature_size: width of the feature layer.
        verbose: `keras.Model.fit`'s progress output (2: a line per epoch).

    Returns:
        The model with outputs `[features, logits]`, and its accuracy.
    """
    keras.utils.set_random_seed(seed)
    model = build_classifier(train.images.shape[1], len(train.class_names), feature_size)
    # Trained through its logits; the features are the layer before them.
    logits_model = keras.Model(model.input, model.outputs[1])
    steps_per_epoch = max(len(train.images) // batch_size, 1)
    schedule = keras.optimizers.schedules.CosineDecay(1e-3, epochs * steps_per_epoch)
    logits_model.compile(
        optimizer=keras.optimizers.Adam(schedule),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"])
    logits_model.fit(_batches(train, batch_size, seed), epochs=epochs,
                     steps_per_epoch=steps_per_epoch, shuffle=False, verbose=verbose)
    accuracy = Accuracy(*(_accuracy(logits_model, split, batch_size) for split in (train, test)))
    return model, accuracy


def _batches(split: LabelledImages, batch_size: int, seed: int) -> tf.data.Dataset:
    """Endless shuffled batches of images in [-1, 1], each image flipped left-right with
    probability 1/2, and their labels; the same for the same seed."""
    data = tf.data.Dataset.from_tensor_slices((split.images, split.labels))
    data = data.shuffle(len(split.images), seed=seed, reshuffle_each_iteration=True).repeat()

    def flipped(step: tf.Tensor, batch: tuple[tf.Tensor, tf.Tensor]
                ) -> tuple[tf.Tensor, tf.Tensor]:
        images, labels = batch
        # Seeded by the step, not drawn from a stateful generator: parallel calls would
        # take its numbers in any order.
        flip = tf.random.stateless_uniform([tf.shape(images)[0]], [seed, step]) < 0.5
        images = tf.where(flip[:, None, None, None], tf.reverse(images, axis=[2]), images)
        return to_unit_range(images), labels

    batches = data.batch(batch_size, drop_remainder=True).enumerate()
    return batches.map(flipped, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def _accuracy(logits_model: keras.Model, split: LabelledImages, batch_size: int) -> float:
    images = tf.data.Dataset.from_tensor_slices(split.images).batch(batch_size)
    logits = logits_model.predict(images.map(to_unit_range), verbose=0)
    return float(np.mean(np.argmax(logits, axis=-1) == split.labels))


def save_classifier(model: keras.Model, path: str | os.PathLike, accuracy: Accuracy,
                    details: dict | None = None) -> Path:
    """Writes `model` as a `.keras` file, and its accuracy (with `details`, e.g. how it was
    trained) as JSON beside it (same name, `.json`), each atomically.

    Returns:
        The path of the JSON file.
    """
    path = Path(path)
    # Keras writes `.keras` files only to paths of that name: save in a scratch folder
    # beside the target, then move the bytes in whole.
    with tempfile.TemporaryDirectory(dir=path.parent) as scratch:
        saved = Path(scratch) / path.name
        model.save(saved)
        with open(saved, "rb") as source, atomic_writer(path) as file:
            shutil.copyfileobj(source, file)
    report = path.with_suffix(".json")
    summary = {"train_accuracy": accuracy.train, "test_accuracy": accuracy.test,
               **(details or {})}
    with atomic_writer(report) as file:
        file.write((json.dumps(summary, indent=2) + "\n").encode())
    return report
