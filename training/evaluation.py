"""FID, Inception Score and KID of a generator: the core the FID callback and the `evaluate`
and `fid_stats` commands share.

The protocol follows the BSN reference code: FID between 10,000 generated and 5,000 real
training images, Inception Score on 50,000 generated images in 10 splits, both with the
2015-12-05 Inception graph (see `training.inception`). KID (Binkowski et al.) comes from the
same features at no extra extraction cost. The reference numbers are in `training.protocol`;
presets use them, tests use tiny ones.

Real-image statistics are computed once and cached on disk as `.npz` files keyed by data
set, split, extractor and image count (`real_statistics_cache_path`).
"""

from __future__ import annotations

import dataclasses
import os
import re
import sys
import zipfile
from collections.abc import Callable

import keras
import numpy as np
import tensorflow as tf

from training import metrics
from training.errors import UserError
from training.export import SERVING_SIGNATURE, ExportError, load_export
from training.inception import FEATURES, PROBS, FeatureExtractor, collect
from training.protocol import IS_SPLITS, KID_SUBSET_SIZE, KID_SUBSETS, NUM_FID_SAMPLES

FID = "fid"
IS_MEAN = "is_mean"
IS_STD = "is_std"
KID = "kid"
KID_STD = "kid_std"

RealImages = tf.data.Dataset | Callable[[], tf.data.Dataset]


class StatisticsFileError(UserError):
    """A real-statistics `.npz` cannot be read or holds no valid Gaussian."""


@dataclasses.dataclass(frozen=True)
class RealStatistics:
    """What generated images are compared with: the real features' Gaussian, and the
    features themselves when KID is wanted."""

    mu: np.ndarray
    sigma: np.ndarray
    features: np.ndarray | None = None
    extractor: str | None = None  # the name of the features' extractor, where known

    @classmethod
    def load(cls, path: str | os.PathLike) -> RealStatistics:
        """Read a TTUR-format `.npz` (`mu`, `sigma`, and optionally `features`).

        Raises:
            StatisticsFileError: the file is missing, not an `.npz`, lacks `mu`/`sigma`, or
                they are no mean and covariance.
        """
        try:
            return cls(*metrics.load_statistics(path), metrics.load_features(path),
                       metrics.load_extractor_name(path))
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as error:
            message = error.args[0] if isinstance(error, KeyError) else error
            raise StatisticsFileError(
                f"{os.fspath(path)!r} cannot be used as real statistics: {message} Write one "
                "with `python -m training.fid_stats`, or use TTUR's fid_stats_*.npz.") from None

    def save(self, path: str | os.PathLike) -> None:
        """Write a TTUR-format `.npz`, atomically; `features` are included when present."""
        metrics.save_statistics(path, self.mu, self.sigma, self.features, self.extractor)

    def check_extractor(self, extractor: FeatureExtractor, source: str) -> None:
        """Refuses an extractor other than the one these statistics were made with.

        Raises:
            StatisticsFileError: naming both, and how to get statistics of `extractor`.
        """
        fix = ("give statistics written with the same extractor (python -m training.fid_stats "
               f"--extractor {extractor.name} ...)")
        if len(self.mu) != extractor.feature_size:
            raise StatisticsFileError(
                f"{source} holds {len(self.mu)}-d statistics, but the extractor "
                f"{extractor.name} gives {extractor.feature_size}-d features: {fix}.")
        if self.extractor is not None and self.extractor != extractor.name:
            raise StatisticsFileError(
                f"{source} holds statistics of the extractor {self.extractor}, not of "
                f"{extractor.name}: an FID across two feature spaces means nothing. Give "
                f"--extractor {self.extractor}, or {fix}.")


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
    return RealStatistics(*statistics.result(), np.concatenate(kept) if keep_features else None,
                          extractor.name)


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
        try:
            cached = RealStatistics.load(cache_path)
        except StatisticsFileError as error:  # a cache is rebuilt, never trusted broken
            print(f"warning: recomputing the real statistics: {error}", file=sys.stderr)
        else:
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


def load_generator(path: str) -> tuple[Callable[[tf.Tensor], tf.Tensor], int]:
    """`(generate, latent_dim)` for an export folder or a `.keras` generator file.

    Raises:
        ExportError: `path` is neither a readable `.keras` file nor a valid generator export.
    """
    if path.endswith(".keras"):
        if not os.path.isfile(path):
            raise ExportError(f"No generator file {path!r}: give a .keras file written by "
                              "keras.Model.save, or an export folder under saved_models/.")
        try:
            model = keras.saving.load_model(path, compile=False)
        except (OSError, ValueError, zipfile.BadZipFile) as error:
            raise ExportError(f"{path!r} is not a loadable .keras generator ({error}).") from None
        return (lambda latents: model(latents, training=False)), int(model.input_shape[-1])
    export = load_export(path)

    def generate(latents: tf.Tensor) -> tf.Tensor:
        # Reached through `export`, which keeps alive the loaded variables the signature reads.
        return export.saved_model.signatures[SERVING_SIGNATURE](latents=latents)["images"]

    return generate, export.latent_dim
