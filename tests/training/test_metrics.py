"""FID, streaming statistics, statistics files, Inception Score and KID against references."""

import os
import warnings

import numpy as np
import pytest
import scipy.linalg

from training import metrics


def _ttur_frechet_distance(mu1, sigma1, mu2, sigma2):
    """TTUR's `calculate_frechet_distance`: the published formula, via scipy's sqrtm."""
    covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)
    return np.square(mu1 - mu2).sum() + np.trace(sigma1 + sigma2 - 2 * covmean.real)


def _gaussian_fit(samples):
    return samples.mean(axis=0), np.cov(samples, rowvar=False)


@pytest.mark.parametrize("dim", [8, 64, 256])
def test_frechet_distance_matches_scipy_sqrtm_formula(dim):
    rng = np.random.default_rng(dim)
    # ||G / sqrt(d)|| ~ 2, so I + G / (4 sqrt(d)) keeps singular values above ~0.5.
    mixing = np.eye(dim) + rng.standard_normal((dim, dim)) / (4 * np.sqrt(dim))
    real = rng.standard_normal((4 * dim, dim)) @ mixing
    fake = 1.3 * rng.standard_normal((4 * dim, dim)) + 0.2
    args = (*_gaussian_fit(real), *_gaussian_fit(fake))

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # well-conditioned inputs must not warn
        distance = metrics.frechet_distance(*args)

    assert isinstance(distance, float)
    np.testing.assert_allclose(distance, _ttur_frechet_distance(*args), rtol=1e-6)


def test_frechet_distance_of_gaussians_with_equal_covariance_is_squared_mean_gap():
    sigma = np.diag([1.0, 2.0, 3.0])
    distance = metrics.frechet_distance(np.zeros(3), sigma, np.array([1.0, 2.0, 2.0]), sigma)
    np.testing.assert_allclose(distance, 9.0, atol=1e-12)


def test_frechet_distance_with_fewer_samples_than_dimensions_is_finite_real_and_warns():
    rng = np.random.default_rng(0)
    dim = 64
    args = (*_gaussian_fit(rng.standard_normal((20, dim))),
            *_gaussian_fit(rng.standard_normal((30, dim)) + 0.1))
    assert np.iscomplexobj(scipy.linalg.sqrtm(args[1] @ args[3]))  # where sqrtm goes wrong

    with pytest.warns(metrics.SingularCovarianceWarning) as caught:
        distance = metrics.frechet_distance(*args)

    assert isinstance(distance, float) and np.isfinite(distance)
    assert distance > 0
    assert [str(warning.message)[:34] for warning in caught] == [
        "sigma1 is numerically singular (no",
        "sigma2 is numerically singular (no",
    ]


def test_frechet_distance_is_exact_for_a_singular_covariance():
    sigma1, sigma2 = np.diag([1.0, 0.0, 4.0]), np.eye(3)
    with pytest.warns(metrics.SingularCovarianceWarning, match="sigma1 is numerically singular"):
        distance = metrics.frechet_distance(np.zeros(3), sigma1, np.zeros(3), sigma2)
    np.testing.assert_allclose(distance, 0.0 + 1.0 + 1.0, atol=1e-12)  # sum (sqrt a - sqrt b)^2


def test_ill_conditioned_but_full_rank_covariances_do_not_warn():
    dim = 32
    sigma1 = np.diag(np.logspace(0, -8, dim))  # condition number 1e8, still full rank
    sigma2 = 2 * sigma1  # their product's condition number is 1e16
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        distance = metrics.frechet_distance(np.zeros(dim), sigma1, np.zeros(dim), sigma2)
    expected = np.sum((np.sqrt(np.diag(sigma1)) - np.sqrt(np.diag(sigma2))) ** 2)
    np.testing.assert_allclose(distance, expected, rtol=1e-9)


def test_frechet_distance_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="different dimensions"):
        metrics.frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))
    with pytest.raises(ValueError, match=r"sigma2 must be a \(3, 3\) matrix"):
        metrics.frechet_distance(np.zeros(3), np.eye(3), np.zeros(3), np.eye(4))
    with pytest.raises(ValueError, match="mu1 must be a vector"):
        metrics.frechet_distance(np.zeros((3, 1)), np.eye(3), np.zeros(3), np.eye(3))


def test_streaming_statistics_match_numpy_over_uneven_batches_with_a_large_offset():
    rng = np.random.default_rng(1)
    # A mean 1e6 times the spread: "sum of squares minus squared sum" loses ~all digits here.
    features = 1e6 + rng.standard_normal((1000, 5)) @ rng.standard_normal((5, 5))
    statistics = metrics.FeatureStatistics()
    cuts = np.cumsum(rng.integers(0, 50, size=60))
    for batch in np.split(features, cuts[cuts < len(features)]):  # includes empty batches
        statistics.update(batch)

    mu, sigma = statistics.result()

    assert statistics.count == len(features)
    np.testing.assert_allclose(mu, features.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(sigma, np.cov(features, rowvar=False), rtol=1e-8, atol=1e-8)


def test_streaming_statistics_reject_bad_batches_and_too_few_samples():
    statistics = metrics.FeatureStatistics()
    statistics.update(np.zeros((1, 3)))
    with pytest.raises(ValueError, match="at least 2"):
        statistics.result()
    with pytest.raises(ValueError, match="earlier batches had 3"):
        statistics.update(np.zeros((2, 4)))
    with pytest.raises(ValueError, match=r"must be \(n, d\)"):
        statistics.update(np.zeros(3))


def test_statistics_file_round_trip_is_ttur_format(tmp_path):
    rng = np.random.default_rng(2)
    features = rng.standard_normal((10, 4))
    mu, sigma = _gaussian_fit(features)
    path = tmp_path / "stats.npz"

    metrics.save_statistics(path, mu, sigma, features=features)

    with np.load(path) as ttur_reader:  # what TTUR's `_handle_path` does
        np.testing.assert_array_equal(ttur_reader["mu"][:], mu)
        np.testing.assert_array_equal(ttur_reader["sigma"][:], sigma)
    loaded_mu, loaded_sigma = metrics.load_statistics(path)
    np.testing.assert_array_equal(loaded_mu, mu)
    np.testing.assert_array_equal(loaded_sigma, sigma)
    np.testing.assert_allclose(metrics.load_features(path), features, rtol=1e-6)
    assert os.listdir(tmp_path) == ["stats.npz"]  # no temporary left behind


def test_published_ttur_statistics_files_load(tmp_path):
    mu, sigma = np.arange(3.0), np.eye(3)
    path = tmp_path / "fid_stats_cifar10_train.npz"
    np.savez_compressed(path, mu=mu, sigma=sigma)  # how TTUR's precalc script writes them

    loaded_mu, loaded_sigma = metrics.load_statistics(path)

    np.testing.assert_array_equal(loaded_mu, mu)
    np.testing.assert_array_equal(loaded_sigma, sigma)
    assert metrics.load_features(path) is None


def test_loading_a_file_without_ttur_keys_names_them(tmp_path):
    path = tmp_path / "other.npz"
    np.savez(path, mean=np.zeros(3))
    with pytest.raises(KeyError, match=r"lacks the keys \['mu', 'sigma'\]"):
        metrics.load_statistics(path)


def test_failed_save_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "stats.npz"
    metrics.save_statistics(path, np.zeros(2), np.eye(2))

    def interrupted_savez(file, **arrays):
        file.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", interrupted_savez)
    with pytest.raises(KeyboardInterrupt):
        metrics.save_statistics(path, np.ones(2), np.eye(2))

    np.testing.assert_array_equal(metrics.load_statistics(path)[0], np.zeros(2))
    assert os.listdir(tmp_path) == ["stats.npz"]


def test_a_statistics_file_gets_the_usual_permissions_not_0600(tmp_path):
    umask = os.umask(0o022)
    os.umask(umask)
    path = tmp_path / "stats.npz"
    metrics.save_statistics(path, np.zeros(2), np.eye(2))
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


@pytest.mark.parametrize("classes", [1, 4, 10])
def test_inception_score_of_equally_likely_one_hot_classes_is_the_class_count(classes):
    probs = np.tile(np.eye(classes), (6, 1))  # each split sees every class equally often
    mean, std = metrics.inception_score(probs, splits=2)
    np.testing.assert_allclose(mean, classes, rtol=1e-12)
    np.testing.assert_allclose(std, 0.0, atol=1e-12)


def test_inception_score_of_uniform_predictions_is_one():
    mean, _ = metrics.inception_score(np.full((20, 7), 1 / 7), splits=4)
    np.testing.assert_allclose(mean, 1.0, rtol=1e-12)


def test_inception_score_matches_the_original_code_split_by_split():
    probs = np.random.default_rng(3).dirichlet(np.full(10, 0.3), size=103)
    scores = []
    for i in range(10):  # openai/improved-gan inception_score/model.py
        part = probs[(i * probs.shape[0] // 10) : ((i + 1) * probs.shape[0] // 10), :]
        kl = part * (np.log(part) - np.log(np.expand_dims(np.mean(part, 0), 0)))
        scores.append(np.exp(np.mean(np.sum(kl, 1))))

    mean, std = metrics.inception_score(probs, splits=10)

    np.testing.assert_allclose([mean, std], [np.mean(scores), np.std(scores)], rtol=1e-10)


def test_inception_score_rejects_logits_and_bad_splits():
    with pytest.raises(ValueError, match="apply softmax"):
        metrics.inception_score(np.array([[2.0, -1.0], [0.5, 0.5]]), splits=1)
    with pytest.raises(ValueError, match="splits must be in"):
        metrics.inception_score(np.full((3, 2), 0.5), splits=4)


def _naive_unbiased_mmd2(x, y):
    """Binkowski et al.'s estimator, written out with explicit index sets."""
    dim, m = x.shape[1], len(x)

    def kernel(a, b):
        return (a @ b / dim + 1) ** 3

    same = sum(
        kernel(a[i], a[j]) for a in (x, y) for i in range(m) for j in range(m) if i != j
    )
    cross = sum(kernel(x[i], y[j]) for i in range(m) for j in range(m))
    return same / (m * (m - 1)) - 2 * cross / m**2


def test_kid_of_one_full_subset_is_the_unbiased_mmd2_estimator():
    rng = np.random.default_rng(4)
    x, y = rng.standard_normal((6, 3)), rng.standard_normal((6, 3)) + 0.3

    mean, std = metrics.kernel_inception_distance(x, y, num_subsets=1, subset_size=6)

    np.testing.assert_allclose(mean, _naive_unbiased_mmd2(x, y), rtol=1e-5)
    assert std == 0.0


def test_kid_is_unbiased_for_two_samples_of_one_distribution():
    rng = np.random.default_rng(5)
    estimates = [
        metrics.kernel_inception_distance(
            rng.standard_normal((100, 16)), rng.standard_normal((100, 16)),
            num_subsets=1, subset_size=100,
        )[0]
        for _ in range(40)
    ]
    # A biased estimator (diagonal terms kept) would sit ~10 standard errors above zero.
    assert abs(np.mean(estimates)) < 3 * np.std(estimates) / np.sqrt(len(estimates))

    mean, std = metrics.kernel_inception_distance(
        rng.standard_normal((500, 16)), rng.standard_normal((500, 16)),
        num_subsets=20, subset_size=100,
    )
    assert abs(mean) < 3 * std


def test_kid_is_positive_for_shifted_distributions_and_reproducible():
    rng = np.random.default_rng(6)
    real, fake = rng.standard_normal((300, 16)), rng.standard_normal((300, 16)) + 0.5

    mean, std = metrics.kernel_inception_distance(fake, real, num_subsets=10, subset_size=100)

    assert mean > 5 * std > 0
    same_seed = metrics.kernel_inception_distance(fake, real, num_subsets=10, subset_size=100)
    other_seed = metrics.kernel_inception_distance(
        fake, real, num_subsets=10, subset_size=100, seed=1
    )
    assert same_seed == (mean, std) and other_seed != (mean, std)


def test_kid_clips_the_subset_size_to_the_smaller_sample_with_a_warning():
    rng = np.random.default_rng(7)
    x, y = rng.standard_normal((8, 3)), rng.standard_normal((12, 3))
    with pytest.warns(UserWarning, match="subset_size 1000 exceeds the smaller sample"):
        clipped = metrics.kernel_inception_distance(x, y, num_subsets=3)
    assert clipped == metrics.kernel_inception_distance(x, y, num_subsets=3, subset_size=8)


def test_kid_rejects_mismatched_feature_sizes():
    with pytest.raises(ValueError, match="different dimensions"):
        metrics.kernel_inception_distance(np.zeros((4, 2)), np.zeros((4, 3)))


@pytest.mark.parametrize("sigma2, message", [
    (-np.eye(3), "negative eigenvalue"),
    (np.diag([1.0, 1.0, -16.0]), "negative eigenvalue"),
    (np.array([[1.0, 0.5, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]), "not symmetric"),
    (np.full((3, 3), np.nan), "must be finite"),
])
def test_frechet_distance_rejects_matrices_that_are_no_covariance(sigma2, message):
    with pytest.raises(ValueError, match=message):
        metrics.frechet_distance(np.zeros(3), np.eye(3), np.zeros(3), sigma2)


def test_rounding_level_negative_eigenvalues_of_a_real_covariance_are_accepted():
    samples = np.random.default_rng(0).standard_normal((5, 8))  # rank 4 < 8 dimensions
    mu, sigma = _gaussian_fit(samples)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", metrics.SingularCovarianceWarning)
        assert np.isfinite(metrics.frechet_distance(mu, sigma, mu, sigma))


def test_kid_rejects_non_finite_features():
    features = np.random.default_rng(0).standard_normal((10, 4))
    broken = features.copy()
    broken[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite"):
        metrics.kernel_inception_distance(features, broken)
