"""`python -m training.fid_stats` and `python -m training.evaluate` on tiny inputs."""

import json

import keras
import numpy as np
import pytest

from tests.training.fid_testing import LATENT_DIM, tiny_feature_model, tiny_generator
from training import evaluate, fid_stats, metrics
from training.evaluation import RealStatistics, evaluate_generator
from training.data import load_images
from training.export import export_generator
from training.inception import FEATURES, ModelExtractor

NUM_REAL = 40
EVALUATION_FLAGS = ["--num", "24", "--splits", "2", "--kid-subsets", "3",
                    "--kid-subset-size", "16", "--batch-size", "16"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A uint8 image array for `--dataset npz`, a `.keras` feature model, and generators."""
    folder = tmp_path_factory.mktemp("fid_commands")
    rng = np.random.default_rng(0)
    np.save(folder / "images.npy", rng.integers(0, 256, (50, 8, 8, 3), dtype=np.uint8))
    tiny_feature_model().save(folder / "features.keras")
    generator = tiny_generator()
    generator.save(folder / "generator.keras")
    export_generator(generator, folder / "export", {"dataset": "toy"})
    return folder


def _real_data_flags(files):
    return ["--dataset", "npz", "--data-dir", str(files / "images.npy")]


def _write_stats(files, out, *extra):
    status = fid_stats.main([
        *_real_data_flags(files), "--num", str(NUM_REAL), "--extractor",
        str(files / "features.keras"), "--out", str(out), *extra,
    ])
    assert status == 0


def test_fid_stats_writes_ttur_statistics_of_the_first_images(files, tmp_path, capsys):
    out = tmp_path / "stats.npz"

    _write_stats(files, out)

    extractor = ModelExtractor.from_file(files / "features.keras")
    images = np.stack(list(load_images("npz", str(files / "images.npy")).as_numpy_iterator()))
    expected = metrics.FeatureStatistics()
    expected.update(extractor(images[:NUM_REAL])[FEATURES])
    mu, sigma = metrics.load_statistics(out)
    np.testing.assert_allclose(mu, expected.result()[0], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(sigma, expected.result()[1], rtol=1e-4, atol=1e-8)
    assert metrics.load_features(out) is None
    assert f"mu and sigma of {NUM_REAL} npz train images" in capsys.readouterr().out


def test_evaluate_scores_an_export_like_its_keras_generator(files, tmp_path, capsys):
    stats = tmp_path / "stats.npz"
    _write_stats(files, stats, "--save-features")
    capsys.readouterr()

    status = evaluate.main([
        str(files / "export"), "--stats", str(stats), "--extractor",
        str(files / "features.keras"), *EVALUATION_FLAGS, "--json",
    ])

    scores = json.loads(capsys.readouterr().out)
    expected = evaluate_generator(
        keras.saving.load_model(files / "generator.keras"), LATENT_DIM,
        ModelExtractor.from_file(files / "features.keras"), RealStatistics.load(stats),
        num_samples=24, is_splits=2, kid_subsets=3, kid_subset_size=16,
    )
    assert status == 0 and scores.keys() == expected.keys() == {
        "fid", "is_mean", "is_std", "kid", "kid_std"
    }
    for name, value in expected.items():
        assert scores[name] == pytest.approx(value, rel=1e-4, abs=1e-6), name


def test_evaluate_a_keras_generator_against_a_data_set_caches_its_statistics(
    files, tmp_path, capsys
):
    status = evaluate.main([
        str(files / "generator.keras"), *_real_data_flags(files), "--num-real", str(NUM_REAL),
        "--cache-dir", str(tmp_path), "--extractor", str(files / "features.keras"),
        *EVALUATION_FLAGS,
    ])

    table = capsys.readouterr().out.splitlines()
    assert status == 0
    assert table[1].split() == ["metric", "value"]
    assert [line.split()[0] for line in table[2:]] == [
        "fid", "is_mean", "is_std", "kid", "kid_std"
    ]
    # Named by the data file too, so that another file's statistics are never reused.
    cached = list(tmp_path.glob(f"npz_images.npy_*_native-train-features_*-{NUM_REAL}.npz"))
    assert len(cached) == 1 and metrics.load_features(cached[0]).shape == (NUM_REAL, 6)


def test_evaluate_without_real_features_reports_no_kid(files, tmp_path, capsys):
    stats = tmp_path / "stats.npz"
    _write_stats(files, stats)
    capsys.readouterr()

    evaluate.main([str(files / "generator.keras"), "--stats", str(stats), "--extractor",
                   str(files / "features.keras"), *EVALUATION_FLAGS, "--json"])

    assert set(json.loads(capsys.readouterr().out)) == {"fid", "is_mean", "is_std"}


def test_statistics_of_another_extractor_of_the_same_size_are_refused(files, tmp_path,
                                                                      capsys):
    stats = tmp_path / "stats.npz"
    _write_stats(files, stats)
    recorded = metrics.load_extractor_name(stats)
    assert recorded == ModelExtractor.from_file(files / "features.keras").name
    other = tmp_path / "other_features.keras"
    tiny_feature_model().save(other)  # the same feature size, other weights
    capsys.readouterr()

    status = evaluate.main([str(files / "generator.keras"), "--stats", str(stats),
                            "--extractor", str(other), *EVALUATION_FLAGS])

    error = capsys.readouterr().err
    assert status == 2
    assert f"holds statistics of the extractor {recorded}" in error
    assert f"Give --extractor {recorded}" in error


def test_evaluate_rejects_a_folder_that_is_no_export(tmp_path, capsys):
    status = evaluate.main([str(tmp_path), "--stats", "unused.npz"])

    assert status == 2
    assert "is not a TensorFlow SavedModel" in capsys.readouterr().err


def test_evaluate_takes_either_a_statistics_file_or_a_data_set():
    with pytest.raises(SystemExit):
        evaluate.main(["generator.keras", "--stats", "s.npz", "--dataset", "cifar10"])
    with pytest.raises(SystemExit):
        evaluate.main(["generator.keras"])


def test_the_fid_logged_in_training_compares_with_the_statistics_fid_stats_writes(
    files, tmp_path
):
    from training import train

    stats = tmp_path / "stats.npz"
    _write_stats(files, stats)
    run = tmp_path / "runs" / "run"
    assert train.main([
        *_real_data_flags(files), "--image-size", "8", "--batch-size", "8", "--steps", "2",
        "--log-every", "2", "--fid-every", "2", "--fid-samples", "16",
        "--fid-real-samples", str(NUM_REAL), "--is-samples", "16",
        "--extractor", str(files / "features.keras"), "--no-export", "--out", str(run),
    ]) == 0
    [cached] = (tmp_path / "runs" / "fid_stats_cache").glob("*.npz")
    for logged, written in zip(metrics.load_statistics(cached), metrics.load_statistics(stats)):
        np.testing.assert_allclose(logged, written, rtol=1e-6, atol=1e-9)
