"""Sample-quality metrics for generative models: FID, Inception Score and KID.

Plain NumPy functions, float64 inside, Python floats out, so that they can be checked against
the published implementations and run anywhere:

* `frechet_distance`: the Frechet Inception Distance (Heusel et al. 2017) between two Gaussians
  fitted to features, as in TTUR's `calculate_frechet_distance` and TF-GAN.
* `FeatureStatistics`: the streaming mean and covariance those Gaussians are fitted with, and
  `save_statistics` / `load_statistics` for TTUR-format `.npz` files (keys `mu`, `sigma`), so
  published statistics files load unchanged.
* `inception_score`: Salimans et al. 2016, as in the original OpenAI code (10 splits).
* `kernel_inception_distance`: the unbiased MMD^2 of Binkowski et al. 2018 with the cubic
  polynomial kernel, averaged over random subsets, as in TF-GAN and clean-fid.

Features come from an extractor in `training.inception`; these functions do not care which.
"""

from __future__ import annotations

import os
import warnings

import numpy as np
import scipy.special

from training.images import atomic_writer

# `inception_score` accepts rows of `probs` summing to 1 within this (float32 softmax outputs).
_PROBABILITY_SUM_TOLERANCE = 1e-3


class SingularCovarianceWarning(RuntimeWarning):
    """A covariance given to `frechet_distance` is (numerically) singular.

    This happens when the statistics were estimated from fewer samples than feature
    dimensions. The distance stays finite and real, but it is dominated by estimation noise
    and not comparable with distances computed from enough samples.
    """


def frechet_distance(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray
) -> float:
    """The Frechet distance between the Gaussians N(mu1, sigma1) and N(mu2, sigma2).

    d^2 = ||mu1 - mu2||^2 + tr(sigma1) + tr(sigma2) - 2 tr(sqrt(sigma1 sigma2)).

    The published code (TTUR) takes `scipy.linalg.sqrtm(sigma1 @ sigma2)`, a general
    matrix square root of a non-symmetric product, which is slow and turns complex or
    non-finite when a covariance is singular. Here the trace term is the sum of the square
    roots of the eigenvalues of the symmetric positive semi-definite matrix
    `A.T @ sigma2 @ A`, for any factor `A @ A.T = sigma1`: it is similar to
    `sigma1 @ sigma2`, so it has the same eigenvalues. `A` is the Cholesky factor (cheap),
    or, when sigma1 is numerically singular, its symmetric square root from an eigen-
    decomposition; tiny negative eigenvalues from rounding are clipped to zero.

    Args:
        mu1: mean of the first Gaussian, shape `(d,)`.
        sigma1: covariance of the first Gaussian, shape `(d, d)`.
        mu2: mean of the second Gaussian, shape `(d,)`.
        sigma2: covariance of the second Gaussian, shape `(d, d)`.

    Returns:
        The squared Frechet distance (what the literature calls FID).

    Warns:
        SingularCovarianceWarning: a covariance is numerically singular, typically because it
            was estimated from fewer samples than dimensions.

    Example:

    >>> mu, sigma = np.zeros(3), np.eye(3)
    >>> round(frechet_distance(mu, sigma, mu + 1.0, sigma), 6)
    3.0
    """
    mu1, sigma1 = _checked_gaussian(mu1, sigma1, "1")
    mu2, sigma2 = _checked_gaussian(mu2, sigma2, "2")
    if mu1.shape != mu2.shape:
        raise ValueError(
            f"The two Gaussians have different dimensions: {mu1.shape[0]} and {mu2.shape[0]}."
        )
    factor1 = _cholesky_or_warn(sigma1, "sigma1")
    if factor1 is None:
        factor1 = _psd_sqrt(sigma1)
    _cholesky_or_warn(sigma2, "sigma2")
    product = factor1.T @ sigma2 @ factor1
    eigenvalues = np.linalg.eigvalsh((product + product.T) / 2)
    trace_sqrt_product = _clipped_sqrt(eigenvalues).sum()
    mean_term = np.square(mu1 - mu2).sum()
    return float(mean_term + np.trace(sigma1) + np.trace(sigma2) - 2.0 * trace_sqrt_product)


def _checked_gaussian(
    mu: np.ndarray, sigma: np.ndarray, which: str
) -> tuple[np.ndarray, np.ndarray]:
    mu = np.asarray(mu, np.float64)
    sigma = np.asarray(sigma, np.float64)
    if mu.ndim != 1:
        raise ValueError(f"mu{which} must be a vector (d,); got shape {mu.shape}.")
    if sigma.shape != (mu.shape[0], mu.shape[0]):
        raise ValueError(
            f"sigma{which} must be a ({mu.shape[0]}, {mu.shape[0]}) matrix to match "
            f"mu{which}; got shape {sigma.shape}."
        )
    if not (np.isfinite(mu).all() and np.isfinite(sigma).all()):
        raise ValueError(f"mu{which} and sigma{which} must be finite.")
    scale = max(float(np.max(np.abs(sigma))), 1e-300)
    if np.max(np.abs(sigma - sigma.T)) > 1e-6 * scale:
        raise ValueError(f"sigma{which} is not symmetric, so it is no covariance matrix; "
                         "recompute the statistics (python -m training.fid_stats).")
    smallest = float(np.linalg.eigvalsh((sigma + sigma.T) / 2)[0])
    # Rounding leaves a covariance's smallest eigenvalues a little below zero, never far.
    if smallest < -1e-6 * scale * sigma.shape[0]:
        raise ValueError(f"sigma{which} has a negative eigenvalue ({smallest:.3g}), so it is "
                         "no covariance matrix; recompute the statistics "
                         "(python -m training.fid_stats).")
    return mu, sigma


def _cholesky_or_warn(sigma: np.ndarray, name: str) -> np.ndarray | None:
    """The Cholesky factor of `sigma`, or None (and a warning) if it is numerically singular."""
    try:
        return np.linalg.cholesky(sigma)
    except np.linalg.LinAlgError:
        warnings.warn(
            f"{name} is numerically singular (not positive definite): it was likely "
            "estimated from fewer samples than feature dimensions. The Frechet distance is "
            "finite but unreliable; use more samples.",
            SingularCovarianceWarning,
            stacklevel=3,
        )
        return None


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    """The symmetric square root of a symmetric positive semi-definite matrix."""
    eigenvalues, eigenvectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (eigenvectors * _clipped_sqrt(eigenvalues)) @ eigenvectors.T


def _clipped_sqrt(eigenvalues: np.ndarray) -> np.ndarray:
    """Square roots of PSD eigenvalues; rounding can make the smallest slightly negative."""
    return np.sqrt(np.clip(eigenvalues, 0.0, None))


class FeatureStatistics:
    """Streaming mean and covariance of feature vectors, in float64.

    Batches are merged with Chan et al.'s pairwise update (each batch's own mean and centred
    scatter matrix, then a rank-one correction), which avoids the cancellation of the
    "sum of squares minus squared sum" formula. `result()` matches `numpy.mean` and
    `numpy.cov(..., rowvar=False)` (unbiased, ddof=1), as used by TTUR.

    Example:

    >>> stats = FeatureStatistics()
    >>> for batch in np.split(np.arange(12.0).reshape(6, 2), 3):
    ...     stats.update(batch)
    >>> mu, sigma = stats.result()
    >>> stats.count, mu.tolist()
    (6, [5.0, 6.0])
    """

    def __init__(self) -> None:
        self._count = 0
        self._mean: np.ndarray | None = None
        self._scatter: np.ndarray | None = None  # sum of centred outer products

    @property
    def count(self) -> int:
        """How many feature vectors have been added."""
        return self._count

    def update(self, batch: np.ndarray) -> None:
        """Add a batch of feature vectors, shape `(n, d)`; `n` may be 0."""
        batch = np.asarray(batch, np.float64)
        if batch.ndim != 2:
            raise ValueError(f"A batch of features must be (n, d); got shape {batch.shape}.")
        if self._mean is not None and batch.shape[1] != self._mean.shape[0]:
            raise ValueError(
                f"Batch has {batch.shape[1]} features, earlier batches had {self._mean.shape[0]}."
            )
        if batch.shape[0] == 0:
            return
        batch_mean = batch.mean(axis=0)
        centred = batch - batch_mean
        batch_scatter = centred.T @ centred
        if self._mean is None:
            self._count, self._mean, self._scatter = batch.shape[0], batch_mean, batch_scatter
            return
        old_count, new_count = self._count, batch.shape[0]
        self._count = old_count + new_count
        delta = batch_mean - self._mean
        self._mean = self._mean + delta * (new_count / self._count)
        self._scatter = self._scatter + batch_scatter + np.outer(
            delta, delta * (old_count * new_count / self._count)
        )

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        """`(mu, sigma)`: the mean `(d,)` and unbiased covariance `(d, d)` so far."""
        if self._count < 2:
            raise ValueError(
                f"A covariance needs at least 2 feature vectors; got {self._count}."
            )
        return self._mean.copy(), self._scatter / (self._count - 1)


def save_statistics(
    path: str | os.PathLike,
    mu: np.ndarray,
    sigma: np.ndarray,
    features: np.ndarray | None = None,
    extractor: str | None = None,
) -> None:
    """Write `mu` and `sigma` to a TTUR-format `.npz` file, atomically.

    The file is written beside `path` under a temporary name and renamed into place, so a
    reader never sees a half-written file and a crash leaves any old file intact.

    Args:
        path: the `.npz` file to write (any suffix is kept as given).
        mu: feature mean, `(d,)`.
        sigma: feature covariance, `(d, d)`.
        features: optionally the feature vectors themselves, `(n, d)`, stored as float32
            under the key `features` so that KID can be computed later; TTUR readers ignore it.
        extractor: optionally the name of the features' extractor, stored under the key
            `extractor` so that statistics of another extractor are not compared with them.
    """
    mu, sigma = _checked_gaussian(mu, sigma, "")
    arrays = {"mu": mu, "sigma": sigma}
    if features is not None:
        arrays["features"] = np.asarray(features, np.float32)
    if extractor is not None:
        arrays["extractor"] = np.asarray(extractor, dtype=np.str_)
    with atomic_writer(path) as file:
        np.savez(file, **arrays)


def load_statistics(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """`(mu, sigma)` from a TTUR-format `.npz` file (e.g. TTUR's published `fid_stats_*.npz`)."""
    with _open_statistics(path) as arrays:
        missing = sorted({"mu", "sigma"} - set(arrays.files))
        if missing:
            raise KeyError(
                f"{os.fspath(path)!r} is not a statistics file: it lacks the keys {missing} "
                f"(has {sorted(arrays.files)}); TTUR-format files hold 'mu' and 'sigma'."
            )
        return _checked_gaussian(arrays["mu"], arrays["sigma"], "")


def load_features(path: str | os.PathLike) -> np.ndarray | None:
    """The feature vectors saved with `save_statistics(..., features=...)`, or None."""
    with _open_statistics(path) as arrays:
        return arrays["features"] if "features" in arrays.files else None


def load_extractor_name(path: str | os.PathLike) -> str | None:
    """The extractor name saved with `save_statistics(..., extractor=...)`, or None (e.g.
    TTUR's files)."""
    with _open_statistics(path) as arrays:
        return str(arrays["extractor"]) if "extractor" in arrays.files else None


def _open_statistics(path: str | os.PathLike) -> np.lib.npyio.NpzFile:
    # allow_pickle=False: a statistics file is data and must not run code when loaded.
    return np.load(path, allow_pickle=False)


def inception_score(probs: np.ndarray, splits: int = 10) -> tuple[float, float]:
    """The Inception Score of class probabilities, as in the original OpenAI code.

    The samples are cut into `splits` consecutive parts; each part scores
    exp(mean_x KL(p(y|x) || p(y))), with p(y) the part's mean prediction. Terms with
    p(y|x) = 0 contribute 0 (the limit of p log p).

    Args:
        probs: class probabilities, `(n, classes)`, rows summing to 1 (for the 2015
            Inception graph: the softmax over its first 1000 logits).
        splits: number of parts; the reference uses 10 parts of 5,000 samples.

    Returns:
        `(mean, std)` of the per-part scores (population std, as in the original code).

    Example:

    >>> round(inception_score(np.eye(4), splits=1)[0], 6)
    4.0
    """
    probs = np.asarray(probs, np.float64)
    if probs.ndim != 2:
        raise ValueError(f"probs must be (n, classes); got shape {probs.shape}.")
    if not 1 <= splits <= probs.shape[0]:
        raise ValueError(f"splits must be in [1, {probs.shape[0]}] (the samples); got {splits}.")
    row_sums = probs.sum(axis=1)
    if (probs < 0).any() or not np.allclose(row_sums, 1.0, atol=_PROBABILITY_SUM_TOLERANCE):
        raise ValueError("probs must be non-negative with rows summing to 1 (apply softmax).")
    n = probs.shape[0]
    scores = []
    for i in range(splits):
        part = probs[i * n // splits : (i + 1) * n // splits]
        marginal = part.mean(axis=0, keepdims=True)
        kl = scipy.special.xlogy(part, part) - scipy.special.xlogy(part, marginal)
        scores.append(np.exp(kl.sum(axis=1).mean()))
    return float(np.mean(scores)), float(np.std(scores))


def kernel_inception_distance(
    features1: np.ndarray,
    features2: np.ndarray,
    num_subsets: int = 100,
    subset_size: int = 1000,
    seed: int = 0,
) -> tuple[float, float]:
    """The Kernel Inception Distance: unbiased MMD^2 with a cubic polynomial kernel.

    k(x, y) = (x . y / d + 1)^3. For each of `num_subsets` subsets of `subset_size` samples
    drawn without replacement from each set, the unbiased estimator

        1/(m(m-1)) sum_{i != j} [k(x_i, x_j) + k(y_i, y_j)] - 2/m^2 sum_{i,j} k(x_i, y_j)

    is computed; KID is the mean over subsets (Binkowski et al. 2018, TF-GAN, clean-fid).
    Being unbiased, it averages to 0 for two samples of one distribution and may be
    slightly negative.

    Args:
        features1: `(n1, d)` features of one sample (e.g. generated images).
        features2: `(n2, d)` features of the other (e.g. real images).
        num_subsets: how many random subsets to average over.
        subset_size: samples per subset and set; clipped (with a warning) to the smaller
            sample size.
        seed: seed of the subset sampling, so a KID is reproducible.

    Returns:
        `(mean, std)` of the per-subset MMD^2 estimates.
    """
    features1 = _checked_features(features1, "features1")
    features2 = _checked_features(features2, "features2")
    if features1.shape[1] != features2.shape[1]:
        raise ValueError(
            f"The feature sets have different dimensions: {features1.shape[1]} and "
            f"{features2.shape[1]}."
        )
    if num_subsets < 1:
        raise ValueError(f"num_subsets must be >= 1; got {num_subsets}.")
    available = min(features1.shape[0], features2.shape[0])
    if available < 2:
        raise ValueError(f"KID needs at least 2 samples in each set; got {available}.")
    if subset_size > available:
        warnings.warn(
            f"KID subset_size {subset_size} exceeds the smaller sample ({available}); "
            f"using {available}.",
            stacklevel=2,
        )
        subset_size = available
    rng = np.random.default_rng(seed)
    estimates = [
        _unbiased_mmd2(
            features1[rng.choice(features1.shape[0], subset_size, replace=False)],
            features2[rng.choice(features2.shape[0], subset_size, replace=False)],
        )
        for _ in range(num_subsets)
    ]
    return float(np.mean(estimates)), float(np.std(estimates))


def _checked_features(features: np.ndarray, name: str) -> np.ndarray:
    # float32 products are accurate to ~1e-7 relative, far below KID's sampling noise, and
    # twice as fast as float64; the kernel values and their sums are taken in float64.
    features = np.asarray(features, np.float32)
    if features.ndim != 2:
        raise ValueError(f"{name} must be (n, d); got shape {features.shape}.")
    if not np.isfinite(features).all():
        raise ValueError(f"{name} holds NaN or infinite values; a generator or extractor "
                         "that produced them gives no meaningful KID.")
    return features


def _unbiased_mmd2(x: np.ndarray, y: np.ndarray) -> float:
    m = x.shape[0]
    k_xx, k_yy, k_xy = (_cubic_kernel(a, b) for a, b in ((x, x), (y, y), (x, y)))
    within = (k_xx.sum() - np.trace(k_xx) + k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
    return float(within - 2.0 * k_xy.sum() / (m * m))


def _cubic_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return (np.dot(x, y.T).astype(np.float64) / x.shape[1] + 1.0) ** 3
