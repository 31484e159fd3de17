"""Sample quality in a classifier's features: the Fréchet distance of each run's samples, and
of reference image sets, to the real training images.

The features are those of a `.keras` classifier of the data's own classes
(`python -m training.feature_classifier`), or of any extractor `training.evaluate` takes. The
distance is FID's (`training.metrics.frechet_distance`), in those features. Its values mean
something only next to each other, so every table carries the same baselines, measured
against the same statistics of the first `num` training images:

- `test images`: `num` held-out real images, what a perfect generator would score (not 0:
  two samples of one distribution differ);
- `test images blurred`: the same images after a Gaussian blur of `BLUR_SIGMA` pixels,
  real content without its fine detail;
- `uniform noise`: images of uniform noise in [-1, 1], what no structure scores.

Each run is measured at its newest checkpoint, read without writing to the run folder (it
may be training), with its sampling generator (the EMA one when the run keeps it) in the
run's own precision. Writes `feature-distance.csv` (a row per set: name, checkpoint step,
distance, images) and `feature-distance.png`.
"""

from __future__ import annotations

import math
import pathlib
import tempfile
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import keras
import numpy as np
import tensorflow as tf

from training import metrics
from training.building import dtype_policy_kept, restore_gan
from training.callbacks.checkpoints import checkpoint_steps
from training.data import load_images
from training.errors import RunFolderError
from training.evaluation import FID, RealStatistics, compute_real_statistics, evaluate_generator
from training.experiments import reporting
from training.inception import FeatureExtractor, make_extractor
from training.presets import TrainConfig
from training.runs import saved_config

if TYPE_CHECKING:
    from matplotlib.figure import Figure

COLUMNS = ("name", "step", "fd", "num_images")
# Pixels; on 32x32 images it keeps the objects and removes most texture.
BLUR_SIGMA = 1.0
TEST_IMAGES = "test images"
BLURRED_TEST_IMAGES = f"test images blurred (sigma {BLUR_SIGMA:g} px)"
UNIFORM_NOISE = "uniform noise"
_SEED = 0


def check_settings(runs: Sequence[pathlib.Path]) -> list[TrainConfig]:
    """The configurations of `runs`, each of which must have a checkpoint.

    Raises:
        RunFolderError: a folder holds no run, or a run has no checkpoint yet.
    """
    configs = []
    for run_dir in runs:
        configs.append(saved_config(run_dir))
        if not checkpoint_steps(run_dir / "checkpoints"):
            raise RunFolderError(f"{run_dir} has no checkpoint yet; measure it once it has "
                                 "saved one (--checkpoint-every).")
    return configs


def run(out: pathlib.Path, extractor_name: str, runs: Sequence[pathlib.Path], dataset: str,
        data_dir: str | None, num_images: int = 10_000) -> list[dict[str, Any]]:
    """Measures the baselines and each run's newest checkpoint; writes
    `feature-distance.csv` and `.png` to `out`, and returns the rows.

    Args:
        out: the output folder.
        extractor_name: a `.keras` feature model, or another name `make_extractor` takes.
        runs: `training.train` run folders.
        dataset, data_dir: the real images, as `load_images` takes them; their `train`
            split is the reference, their `test` split a baseline.
        num_images: images of every set.
    """
    # A restored run sets the global policy to its precision; the extractor computes in
    # float32 whatever the runs do.
    keras.config.set_dtype_policy("float32")
    extractor = make_extractor(extractor_name)
    train_images = load_images(dataset, data_dir, "train")
    reference = compute_real_statistics(extractor, train_images, num_images,
                                        keep_features=False)
    test_images = load_images(dataset, data_dir, "test")
    image_shape = tuple(train_images.element_spec.shape)
    baselines = {
        TEST_IMAGES: test_images,
        BLURRED_TEST_IMAGES: test_images.batch(256).map(
            lambda images: gaussian_blur(images, BLUR_SIGMA)),
        UNIFORM_NOISE: uniform_noise(image_shape, _SEED),
    }
    rows = [{"name": name, "step": "",
             "fd": _distance(extractor, images, num_images, reference),
             "num_images": num_images} for name, images in baselines.items()]
    for run_dir in runs:
        with dtype_policy_kept():
            step, fd = _run_distance(run_dir, extractor, reference, num_images)
        rows.append({"name": str(run_dir), "step": step, "fd": fd, "num_images": num_images})
    reporting.write_csv(out / "feature-distance.csv", rows, COLUMNS)
    data_name = pathlib.Path(data_dir).name if dataset in ("folder", "npz") else dataset
    title = (f"Fréchet distance to {num_images} train images of {data_name}\nin the features "
             f"of {extractor.name}")
    reporting.save_figure(plot(rows, title), out / "feature-distance.png")
    return rows


def gaussian_blur(images: tf.Tensor, sigma: float) -> tf.Tensor:
    """Blurs a batch of images `(N, H, W, C)` with a Gaussian of `sigma` pixels, cut at
    3 sigma; edges are mirrored, so a flat image stays flat.

    Example:

    ```python
    flat = tf.fill((1, 8, 8, 3), 0.5)
    assert np.allclose(gaussian_blur(flat, 1.0), 0.5)
    ```
    """
    radius = max(math.ceil(3 * sigma), 1)
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    taps = tf.constant(taps / taps.sum(), tf.float32)
    channels = images.shape[-1]
    # Separable: one pass down the columns, one along the rows, each channel on its own.
    vertical = tf.tile(tf.reshape(taps, (-1, 1, 1, 1)), (1, 1, channels, 1))
    horizontal = tf.reshape(vertical, (1, -1, channels, 1))
    padded = tf.pad(images, [[0, 0], [radius, radius], [radius, radius], [0, 0]],
                    mode="REFLECT")
    blurred = tf.nn.depthwise_conv2d(padded, vertical, [1, 1, 1, 1], "VALID")
    return tf.nn.depthwise_conv2d(blurred, horizontal, [1, 1, 1, 1], "VALID")


def uniform_noise(image_shape: tuple[int, ...], seed: int) -> tf.data.Dataset:
    """Endless images of independent uniform noise in [-1, 1], the same for the same seed."""
    return tf.data.Dataset.range(2**62).map(
        lambda index: tf.random.stateless_uniform(image_shape, tf.stack([seed, index]),
                                                  minval=-1.0, maxval=1.0))


def _distance(extractor: FeatureExtractor, images: tf.data.Dataset, num_images: int,
              reference: RealStatistics) -> float:
    statistics = compute_real_statistics(extractor, images, num_images, keep_features=False)
    return metrics.frechet_distance(statistics.mu, statistics.sigma, reference.mu,
                                    reference.sigma)


def _run_distance(run_dir: pathlib.Path, extractor: FeatureExtractor,
                  reference: RealStatistics, num_images: int) -> tuple[int, float]:
    """The step of the run's newest checkpoint that restores, and its samples' distance."""
    config = saved_config(run_dir)
    # Restored from the run's checkpoints into a scratch folder: a restore into the run's
    # own folder could rewrite its checkpoint state file and clear its unfinished saves,
    # which a training run may be writing at this moment.
    with tempfile.TemporaryDirectory() as scratch:
        gan, checkpoint = restore_gan(config, pathlib.Path(scratch), tf.distribute.get_strategy(),
                                      checkpoints_from=run_dir)
    generator = gan.prepare_sampling_generator()
    scores = evaluate_generator(lambda latents: generator(latents, training=False),
                                config.latent_dim, extractor, reference,
                                num_samples=num_images, seed=_SEED)
    return checkpoint.step, scores[FID]


def plot(rows: Sequence[dict[str, Any]], title: str) -> Figure:
    """A horizontal bar per row, the baselines grey, the runs blue; logarithmic when every
    distance is positive (noise lies orders of magnitude beyond real images)."""
    pyplot = reporting.pyplot()
    figure, axes = pyplot.subplots(figsize=(7, 0.45 * len(rows) + 1.4))
    names = [row["name"] for row in rows]
    distances = [row["fd"] for row in rows]
    colors = ["tab:blue" if row["step"] != "" else "tab:grey" for row in rows]
    positions = np.arange(len(rows))[::-1]
    axes.barh(positions, distances, color=colors)
    axes.set_yticks(positions, names, fontsize=8)
    for position, distance in zip(positions, distances):
        axes.annotate(f" {distance:.3g}", (distance, position), va="center", fontsize=7)
    if min(distances) > 0:
        axes.set_xscale("log")
    axes.set_xlabel("Fréchet distance in the classifier's features")
    axes.grid(axis="x", alpha=0.3)
    axes.set_title(title, fontsize=9)
    figure.tight_layout()
    return figure


def summary(rows: Sequence[dict[str, Any]]) -> list[str]:
    """The table: name, checkpoint step (runs), distance and images, one line per row."""
    width = max(len(row["name"]) for row in rows)
    lines = [f"{'name':<{width}}  {'step':>7}  {'FD':>10}  images"]
    lines += [f"{row['name']:<{width}}  {row['step']!s:>7}  {row['fd']:>10.4g}  "
              f"{row['num_images']}" for row in rows]
    return lines
