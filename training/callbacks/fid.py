"""FID, Inception Score and KID of a GAN's generator, during training (`FIDCallback`) or after.

The protocol follows the BSN reference code: FID between 10,000 generated and 5,000 real
training images, Inception Score on 50,000 generated images in 10 splits, both with the
2015-12-05 Inception graph (see `training.inception`). KID (Binkowski et al.) comes from the
same features at no extra extraction cost. The reference numbers are the module constants
below; presets use them, tests use tiny ones.

Real-image statistics are computed once and cached on disk as `.npz` files keyed by data
set, split, extractor and image count (`real_statistics_cache_path`).
"""

from __future__ import annotations

import dataclasses
import os
import re
import time
from collections.abc import Callable

import keras
import numpy as np
import tensorflow as tf

from training import metrics
from training.callbacks.steps import generator_step
from training.inception import (
    FEATURES,
    INCEPTION_2015_NAME,
    PROBS,
    FeatureExtractor,
    collect,
    make_extractor,
)

# The reference protocol (BSN code, after TF-GAN): sample counts, splits and KID subsets.
NUM_FID_SAMPLES = 10_000
NUM_REAL_SAMPLES = 5_000
NUM_IS_SAMPLES = 50_000
IS_SPLITS = 10
KID_SUBSETS = 100
KID_SUBSET_SIZE = 1_000

FID = "fid"
IS_MEAN = "is_mean"
IS_STD = "is_std"
KID = "kid"
KID_STD = "kid_std"

RealImages = tf.data.Dataset | Callable[[], tf.data.Dataset]


@dataclasses.dataclass(frozen=True)
class RealStatistics:
    """What generated images are compared with: the real features' Gaussian, and the
    features themselves when KID is wanted."""

    mu: np.ndarray
    sigma: np.ndarray
    features: np.ndarray | None = None

    @classmethod
    def load(cls, path: str | os.PathLike) -> RealStatistics:
        """Read a TTUR-format `.npz` (`mu`, `sigma`, and optionally `features`)."""
        return cls(*metrics.load_statistics(path), metrics.load_features(path))

    def save(self, path: str | os.PathLike) -> None:
        """Write a TTUR-format `.npz`, atomically; `features` are included when present."""
        metrics.save_statistics(path, self.mu, self.sigma, self.features)


def compute_real_statistics(
    extractor: FeatureExtractor,
    images: tf.data.Dataset,
    num_images: int,
    keep_features: bool = True,
) -> RealStatistics:
    """Statistics of the first `num_images` images of `images`, streamed batch by batch.

    Args:
        extractor: the feature extractor.
        images: float32 images in [-1, 1], unbatched or batched. Shuffle it beforehand to
            use a random subset, as the reference does.
        num_images: how many images to use.
        keep_features: also return the features (for KID); without them only the mean
            and covariance are held in memory.
    """
    statistics = metrics.FeatureStatistics()
    kept = []
    for outputs in extractor.iterate_dataset(images, num_images):
        statistics.update(outputs[FEATURES])
        if keep_features:
            kept.append(outputs[FEATURES])
    return RealStatistics(*statistics.result(), np.concatenate(kept) if keep_features else None)


def default_cache_dir() -> str:
    """`$KERAS_HOME/keras_bssn/fid_stats`, by default `~/.keras/keras_bssn/fid_stats`."""
    keras_home = os.environ.get("KERAS_HOME", os.path.join(os.path.expanduser("~"), ".keras"))
    return os.path.join(keras_home, "keras_bssn", "fid_stats")


def real_statistics_cache_path(
    cache_dir: str | None, dataset_name: str, split: str, extractor_name: str, num_images: int
) -> str:
    """The cache file for one data set, split, extractor and image count."""
    key = "-".join(
        re.sub(r"[^A-Za-z0-9_.]+", "_", part)
        for part in (dataset_name, split, extractor_name, str(num_images))
    )
    return os.path.join(cache_dir or default_cache_dir(), f"{key}.npz")


def cached_real_statistics(
    extractor: FeatureExtractor,
    images: RealImages,
    num_images: int,
    cache_path: str | None = None,
) -> RealStatistics:
    """Real statistics with features, read from `cache_path` or computed and written there.

    `images` may be a callable returning the data set, so that it is only loaded when the
    cache misses.
    """
    if cache_path and os.path.exists(cache_path):
        cached = RealStatistics.load(cache_path)
        if cached.features is not None and len(cached.features) == num_images:
            return cached
    dataset = images if isinstance(images, tf.data.Dataset) else images()
    statistics = compute_real_statistics(extractor, dataset, num_images, keep_features=True)
    if cache_path:
        statistics.save(cache_path)
    return statistics


def sample_latents(num: int, latent_dim: int, seed: int) -> np.ndarray:
    """`num` standard normal latents, float32, the same for the same seed."""
    return np.random.default_rng(seed).standard_normal((num, latent_dim), dtype=np.float32)


def evaluate_generator(
    generate: Callable[[tf.Tensor], tf.Tensor],
    latent_dim: int,
    extractor: FeatureExtractor,
    real: RealStatistics,
    *,
    num_samples: int = NUM_FID_SAMPLES,
    num_is_samples: int | None = None,
    is_splits: int = IS_SPLITS,
    kid_subsets: int = KID_SUBSETS,
    kid_subset_size: int = KID_SUBSET_SIZE,
    seed: int = 0,
    strategy: tf.distribute.Strategy | None = None,
) -> dict[str, float]:
    """FID, and IS and KID where available, of a generator against real statistics.

    One pass generates max(`num_samples`, `num_is_samples`) images from latents drawn with
    `seed` and extracts their features: FID and KID use the first `num_samples`, the
    Inception Score the first `num_is_samples`.

    Args:
        generate: latents `(B, latent_dim)` -> images in [-1, 1].
        latent_dim: the generator's latent size.
        extractor: the feature extractor the real statistics were computed with.
        real: the real statistics; KID needs their `features`.
        num_samples: generated images for FID and KID.
        num_is_samples: generated images for the Inception Score (default `num_samples`);
            ignored when the extractor gives no class probabilities.
        is_splits: Inception Score splits.
        kid_subsets: KID subsets.
        kid_subset_size: images per KID subset.
        seed: seed of the latents and of the KID subsets.
        strategy: distribution strategy to generate and extract under.

    Returns:
        `{"fid": ...}`, plus `"is_mean"`, `"is_std"` if the extractor has class
        probabilities and `"kid"`, `"kid_std"` if `real.features` is set.
    """
    limits = {FEATURES: num_samples}
    if extractor.has_probs:
        limits[PROBS] = num_is_samples or num_samples
    latents = sample_latents(max(limits.values()), latent_dim, seed)
    generated = collect(extractor.iterate_generated(generate, latents, strategy), limits)

    statistics = metrics.FeatureStatistics()
    statistics.update(generated[FEATURES])
    scores = {FID: metrics.frechet_distance(*statistics.result(), real.mu, real.sigma)}
    if PROBS in generated:
        scores[IS_MEAN], scores[IS_STD] = metrics.inception_score(generated[PROBS], is_splits)
    if real.features is not None:
        scores[KID], scores[KID_STD] = metrics.kernel_inception_distance(
            generated[FEATURES], real.features, kid_subsets, kid_subset_size, seed
        )
    return scores


def format_scores(scores: dict[str, float]) -> str:
    """One line, e.g. `fid 12.34  is_mean 7.01  is_std 0.08  kid 0.0102  kid_std 0.0009`."""
    return "  ".join(f"{name} {value:.4g}" for name, value in scores.items())


class FIDCallback(keras.callbacks.Callback):
    """Logs FID, Inception Score and KID of a GAN's generator every N epochs or steps.

    The model passed to `fit` must have `latent_dim` and `generator`; its
    `sampling_generator` (e.g. the EMA generator) is used when it has one. Each evaluation
    draws the same latents (`seed`), so scores move only with the generator. Images are
    generated and their features extracted batch by batch, on the model's distribution
    strategy.

    The scores go into the `logs` of `on_epoch_end` (and of `on_train_batch_end` when
    evaluating every N steps) as `fid`, `is_mean`, `is_std`, `kid` and `kid_std`, so
    `CSVLogger`, `TensorBoard` and `History` record them. They are set on every epoch, as
    NaN in epochs without an evaluation, because `CSVLogger` fixes its columns at the first
    epoch. List this callback before those loggers. Every evaluation is also appended to
    `history`, a list of dicts with `epoch`, `step` and the scores.

    Args:
        real_images: float32 real images in [-1, 1] (unbatched or batched `tf.data.Dataset`),
            or a callable returning them, called only if the statistics are not cached.
        extractor: a `FeatureExtractor`, or a name or path for `make_extractor`.
        every_n_epochs: evaluate at the end of every N-th epoch (default 1, unless
            `every_n_steps` is given).
        every_n_steps: evaluate after every N-th training batch, counted across epochs (for
            a GAN with a `g_optimizer`: every N-th generator step, resumes included).
        num_samples: generated images for FID and KID.
        num_real: real images for the statistics.
        num_is_samples: generated images for the Inception Score (default `num_samples`).
        is_splits: Inception Score splits.
        kid_subsets: KID subsets.
        kid_subset_size: images per KID subset.
        seed: seed of the latents and KID subsets.
        dataset_name: names the real data in the statistics cache; without it the real
            statistics are computed once per callback and not written to disk.
        split: the real data's split, for the cache key.
        cache_dir: folder of the statistics cache (default `default_cache_dir()`).
        verbose: 1 prints one line per evaluation, 0 is silent.

    Example:

    ```python
    fid = FIDCallback(
        lambda: load_images("cifar10", split="train").shuffle(50_000, seed=0),
        every_n_epochs=5, dataset_name="cifar10", split="train",
    )
    gan.fit(data, epochs=100, callbacks=[fid, keras.callbacks.CSVLogger("log.csv")])
    ```
    """

    def __init__(
        self,
        real_images: RealImages,
        extractor: FeatureExtractor | str = INCEPTION_2015_NAME,
        *,
        every_n_epochs: int | None = None,
        every_n_steps: int | None = None,
        num_samples: int = NUM_FID_SAMPLES,
        num_real: int = NUM_REAL_SAMPLES,
        num_is_samples: int | None = None,
        is_splits: int = IS_SPLITS,
        kid_subsets: int = KID_SUBSETS,
        kid_subset_size: int = KID_SUBSET_SIZE,
        seed: int = 0,
        dataset_name: str | None = None,
        split: str = "train",
        cache_dir: str | None = None,
        verbose: int = 1,
    ):
        super().__init__()
        if every_n_epochs is not None and every_n_steps is not None:
            raise ValueError("Give every_n_epochs or every_n_steps, not both.")
        if every_n_epochs is None and every_n_steps is None:
            every_n_epochs = 1
        for name, value in (("every_n_epochs", every_n_epochs), ("every_n_steps", every_n_steps)):
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1; got {value}.")
        self.real_images = real_images
        self.extractor = make_extractor(extractor) if isinstance(extractor, str) else extractor
        self.every_n_epochs = every_n_epochs
        self.every_n_steps = every_n_steps
        self.num_real = num_real
        self.cache_path = None
        if dataset_name:
            self.cache_path = real_statistics_cache_path(
                cache_dir, dataset_name, split, self.extractor.name, num_real
            )
        self.verbose = verbose
        self._settings = dict(
            num_samples=num_samples,
            num_is_samples=num_is_samples,
            is_splits=is_splits,
            kid_subsets=kid_subsets,
            kid_subset_size=kid_subset_size,
            seed=seed,
        )
        self.history: list[dict[str, float]] = []
        self._real: RealStatistics | None = None
        self._epoch = 0
        self._step = 0  # training batches seen, across epochs and `fit` calls
        self._epoch_first_step = 0
        self._epoch_scores: dict[str, float] | None = None
        self._generate: tuple[keras.Model, Callable[[tf.Tensor], tf.Tensor]] | None = None

    @property
    def metric_names(self) -> list[str]:
        """The log keys this callback writes."""
        names = [FID, KID, KID_STD]
        return names + [IS_MEAN, IS_STD] if self.extractor.has_probs else names

    def real_statistics(self) -> RealStatistics:
        """The real statistics, from the cache or computed on first use."""
        if self._real is None:
            self._real = cached_real_statistics(
                self.extractor, self.real_images, self.num_real, self.cache_path
            )
        return self._real

    def evaluate(self) -> dict[str, float]:
        """Score the model's generator now; also records the result in `history`."""
        started = time.perf_counter()
        scores = evaluate_generator(
            self._generate_function(),
            self.model.latent_dim,
            self.extractor,
            self.real_statistics(),
            strategy=getattr(self.model, "distribute_strategy", None),
            **self._settings,
        )
        self._epoch_scores = scores
        self.history.append({"epoch": self._epoch, "step": self._step, **scores})
        if self.verbose:
            seconds = time.perf_counter() - started
            where = f"epoch {self._epoch + 1}, step {self._step}"
            print(f"\nFIDCallback, {where}: {format_scores(scores)} ({seconds:.1f} s)")
        return scores

    def _generate_function(self) -> Callable[[tf.Tensor], tf.Tensor]:
        """Inference with the sampling generator; the same function while the generator is
        the same, so the extractor's compiled step for it is reused, not traced again."""
        generator = getattr(self.model, "sampling_generator", None)
        if generator is None:
            generator = self.model.generator
        if self._generate is None or self._generate[0] is not generator:
            self._generate = (generator, lambda latents: generator(latents, training=False))
        return self._generate[1]

    def _counts_generator_steps(self) -> bool:
        # A GAN's own step counter survives a resume; batches seen by this process do not.
        return getattr(self.model, "g_optimizer", None) is not None

    def on_train_begin(self, logs: dict | None = None) -> None:
        if self._counts_generator_steps():
            self._step = generator_step(self.model)

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._epoch = epoch
        self._epoch_first_step = self._step
        self._epoch_scores = None

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        previous = self._step
        self._step = (generator_step(self.model) if self._counts_generator_steps()
                      else self._epoch_first_step + batch + 1)
        # With `steps_per_execution` > 1 only every k-th batch is reported: evaluate once a
        # multiple of N has been passed, not only when it is hit.
        if self.every_n_steps and self._step // self.every_n_steps > previous // self.every_n_steps:
            scores = self.evaluate()
            if logs is not None:
                logs.update(scores)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if self.every_n_epochs and (epoch + 1) % self.every_n_epochs == 0:
            self.evaluate()
        if logs is not None:
            logs.update(self._epoch_scores or dict.fromkeys(self.metric_names, float("nan")))
