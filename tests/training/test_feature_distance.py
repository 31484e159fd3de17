"""The feature classifier command and the `feature-distance` experiment, on a tiny labelled
folder of two classes the tests draw."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from training import analyze, feature_classifier, train
from training.classifier import train_classifier
from training.data.labelled import load_labelled_images
from training.experiments import feature_distance
from training.inception import FEATURES, PROBS, ModelExtractor

REPO = Path(__file__).resolve().parents[2]
FEATURE_SIZE = 16
TEST_IMAGES_PER_CLASS = 12

pytestmark = pytest.mark.slow


def _drawn_images(rng: np.random.Generator, kind: str, count: int) -> np.ndarray:
    """32x32 images: "stripes" of a random angle, frequency and colour, or "blobs", a soft
    disc of a random place, size and colour on a dark ground."""
    rows, columns = np.meshgrid(np.arange(32), np.arange(32), indexing="ij")
    images = []
    for _ in range(count):
        colour = rng.uniform(0.3, 1.0, 3)
        if kind == "stripes":
            angle, period = rng.uniform(0, np.pi), rng.uniform(3, 8)
            position = rows * np.cos(angle) + columns * np.sin(angle)
            shade = 0.5 + 0.5 * np.sin(2 * np.pi * position / period + rng.uniform(0, 6.3))
        else:
            centre, radius = rng.uniform(8, 24, 2), rng.uniform(4, 10)
            distance2 = (rows - centre[0]) ** 2 + (columns - centre[1]) ** 2
            shade = np.exp(-distance2 / (2 * radius**2))
        images.append(255 * shade[..., None] * colour)
    return np.asarray(images).astype(np.uint8)


@pytest.fixture(scope="module")
def labelled_folder(tmp_path_factory) -> Path:
    """train/{blobs,stripes}/ (24 JPEGs each) and test/{blobs,stripes}/ (12 each)."""
    folder = tmp_path_factory.mktemp("labelled")
    rng = np.random.default_rng(0)
    for split, count in (("train", 24), ("test", TEST_IMAGES_PER_CLASS)):
        for kind in ("blobs", "stripes"):
            (folder / split / kind).mkdir(parents=True)
            for index, image in enumerate(_drawn_images(rng, kind, count)):
                Image.fromarray(image).save(folder / split / kind / f"{index:03d}.jpg",
                                            quality=90)
    return folder


@pytest.fixture(scope="module")
def classifier(labelled_folder, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """The command's model, trained one epoch on the labelled folder, and its run."""
    out = tmp_path_factory.mktemp("classifier") / "blobs-stripes.keras"
    result = subprocess.run(
        [sys.executable, "-m", "training.feature_classifier", "--data-dir",
         str(labelled_folder), "--out", str(out), "--epochs", "1", "--batch-size", "16",
         "--feature-size", str(FEATURE_SIZE)],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return out, result


def test_the_command_writes_a_feature_model_and_its_accuracy(classifier, labelled_folder):
    model_path, result = classifier
    extractor = ModelExtractor.from_file(model_path)
    assert extractor.has_probs
    images = np.random.default_rng(1).uniform(-1, 1, (5, 32, 32, 3)).astype(np.float32)
    outputs = extractor(images)
    assert outputs[FEATURES].shape == (5, FEATURE_SIZE)
    assert outputs[PROBS].shape == (5, 2)
    np.testing.assert_allclose(outputs[PROBS].sum(axis=-1), 1.0, rtol=1e-5)

    report = json.loads(model_path.with_suffix(".json").read_text())
    test = load_labelled_images(labelled_folder, "test")
    probs = extractor(test.images.astype(np.float32) / 127.5 - 1.0)[PROBS]
    assert report["test_accuracy"] == np.mean(np.argmax(probs, axis=-1) == test.labels)
    assert 0.0 <= report["train_accuracy"] <= 1.0
    assert report["classes"] == ["blobs", "stripes"]
    assert (report["train_images"], report["test_images"]) == (48, 24)
    assert f"test accuracy {report['test_accuracy']:.4f}" in result.stdout
    # Written atomically: nothing but the model and its report is left in the folder.
    assert sorted(path.name for path in model_path.parent.iterdir()) == [
        "blobs-stripes.json", "blobs-stripes.keras"]


def test_the_same_seed_trains_the_same_classifier(labelled_folder):
    test = load_labelled_images(labelled_folder, "test")
    first, accuracy = train_classifier(test, test, epochs=1, batch_size=8, seed=3,
                                       feature_size=FEATURE_SIZE, verbose=0)
    keras.backend.clear_session()
    second, again = train_classifier(test, test, epochs=1, batch_size=8, seed=3,
                                     feature_size=FEATURE_SIZE, verbose=0)
    assert accuracy == again
    for weight, other in zip(first.weights, second.weights):
        np.testing.assert_array_equal(weight.numpy(), other.numpy(), err_msg=weight.path)


def test_labels_follow_the_class_folders(labelled_folder):
    test = load_labelled_images(labelled_folder, "test")
    assert test.class_names == ("blobs", "stripes")
    assert test.images.shape == (2 * TEST_IMAGES_PER_CLASS, 32, 32, 3)
    # Stripes change from pixel to pixel far more than soft blobs: the labels say which is
    # which.
    images = test.images.astype(np.float64)
    detail = (np.abs(np.diff(images, axis=1)).mean(axis=(1, 2, 3))
              + np.abs(np.diff(images, axis=2)).mean(axis=(1, 2, 3)))
    assert detail[test.labels == 0].max() < detail[test.labels == 1].min()


_COMPLETE = ("train/a/1.jpg", "train/b/1.jpg", "test/a/1.jpg", "test/b/1.jpg")


@pytest.mark.parametrize("case, files, message", [
    ("missing data", None, "does not exist"),
    ("no classes", ("train/1.jpg", "test/1.jpg"), "needs at least 2"),
    ("no test split", ("train/a/1.jpg", "train/b/1.jpg"), "has no test/ folder"),
    ("other test classes", ("train/a/1.jpg", "train/b/1.jpg", "test/a/1.jpg", "test/c/1.jpg"),
     "differ from the other split's"),
    ("out folder missing", _COMPLETE, "does not exist; create it first"),
    ("out not .keras", _COMPLETE, "give a name ending in .keras"),
])
def test_mistakes_are_named_with_exit_code_2(case, files, message, tmp_path, capsys):
    data_dir = tmp_path / "data"
    for name in files or ():
        (data_dir / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(data_dir / name)
    out = {"out folder missing": tmp_path / "no" / "model.keras",
           "out not .keras": tmp_path / "model.h5"}.get(case, tmp_path / "model.keras")
    code = feature_classifier.main(["--data-dir", str(data_dir), "--out", str(out),
                                    "--epochs", "1"])
    assert code == 2
    error = capsys.readouterr().err
    assert error.startswith("error: ") and message in error, error
    assert not out.exists()


def test_a_bad_epoch_count_is_refused_by_the_command(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "training.feature_classifier", "--data-dir", str(tmp_path),
         "--out", str(tmp_path / "model.keras"), "--epochs", "0"],
        cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "error: argument --epochs: expected a whole number >= 1" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_gaussian_blur_keeps_flat_images_and_removes_fine_detail():
    flat = tf.fill((1, 8, 8, 3), 0.5)
    np.testing.assert_allclose(feature_distance.gaussian_blur(flat, 1.0), 0.5, rtol=1e-6)
    checkerboard = np.indices((8, 8)).sum(axis=0) % 2 * 2.0 - 1.0
    images = np.repeat(checkerboard[None, :, :, None], 3, axis=-1).astype(np.float32)
    blurred = feature_distance.gaussian_blur(images, 1.0).numpy()
    assert blurred.shape == images.shape
    assert np.abs(blurred).max() < 0.1


@pytest.fixture(scope="module")
def two_step_run(labelled_folder, tmp_path_factory) -> Path:
    """A run of two steps in bfloat16: the experiment must measure it in the float32 of the
    classifier, and leave the global policy float32 for the next."""
    out = tmp_path_factory.mktemp("trained") / "run"
    assert train.main(["--preset", "cifar10-cnn-bssn", "--dataset", "folder", "--data-dir",
                       str(labelled_folder), "--image-size", "8", "--batch-size", "8",
                       "--precision", "bfloat16", "--steps", "2", "--log-every", "1",
                       "--sample-every", "2", "--checkpoint-every", "2", "--fid-every", "0",
                       "--no-export", "--out", str(out)]) == 0
    keras.config.set_dtype_policy("float32")  # as a fresh process has it
    return out


# 24 images in 16-d features: covariances from barely more samples than dimensions.
@pytest.mark.filterwarnings("ignore::training.metrics.SingularCovarianceWarning")
def test_feature_distance_ranks_real_images_before_blur_and_noise(classifier, labelled_folder,
                                                                  two_step_run, tmp_path,
                                                                  capsys):
    # A save the run may be writing: the experiment must read the run, never tidy it.
    unfinished_save = two_step_run / "checkpoints" / "ckpt-4_temp"
    unfinished_save.mkdir()
    state_file = (two_step_run / "checkpoints" / "checkpoint").read_bytes()
    num = 2 * TEST_IMAGES_PER_CLASS
    assert analyze.main(["feature-distance", "--extractor", str(classifier[0]),
                         "--dataset", "folder", "--data-dir", str(labelled_folder),
                         "--runs", str(two_step_run), "--num", str(num),
                         "--out", str(tmp_path)]) == 0
    with open(tmp_path / "feature-distance.csv") as file:
        reader = csv.DictReader(file)
        assert tuple(reader.fieldnames) == feature_distance.COLUMNS
        rows = {row["name"]: row for row in reader}
    assert list(rows) == [feature_distance.TEST_IMAGES, feature_distance.BLURRED_TEST_IMAGES,
                          feature_distance.UNIFORM_NOISE, str(two_step_run)]
    assert all(int(row["num_images"]) == num for row in rows.values())
    assert rows[str(two_step_run)]["step"] == "2"
    distance = {name: float(row["fd"]) for name, row in rows.items()}
    assert all(np.isfinite(value) for value in distance.values())
    assert (distance[feature_distance.TEST_IMAGES]
            < distance[feature_distance.BLURRED_TEST_IMAGES]
            < distance[feature_distance.UNIFORM_NOISE])
    # Two steps from initialization the generator draws nearly flat images, nothing like
    # the data.
    assert distance[str(two_step_run)] > distance[feature_distance.TEST_IMAGES]
    assert (tmp_path / "feature-distance.png").read_bytes()[:4] == b"\x89PNG"
    printed = capsys.readouterr().out
    assert f"{feature_distance.UNIFORM_NOISE}" in printed and str(two_step_run) in printed
    assert unfinished_save.is_dir()
    assert (two_step_run / "checkpoints" / "checkpoint").read_bytes() == state_file
    assert keras.config.dtype_policy().name == "float32"


@pytest.mark.parametrize("case, message", [
    ("no run", "holds no run"),
    ("no checkpoint", "has no checkpoint yet"),
    ("no extractor", "no such file"),
])
def test_feature_distance_names_what_it_cannot_measure(case, message, classifier,
                                                       two_step_run, tmp_path, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    if case != "no run":
        (run_dir / "config.json").write_bytes((two_step_run / "config.json").read_bytes())
    if case == "no extractor":
        run_dir = two_step_run
    extractor = tmp_path / "typo.keras" if case == "no extractor" else classifier[0]
    assert analyze.main(["feature-distance", "--extractor", str(extractor), "--runs",
                         str(run_dir), "--out", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: ") and message in error, error
    assert not (tmp_path / "out").exists()
