"""The scripts in examples/, each run as its docstring says (`python -m examples.NAME` from the
repository root), shortened by its own flags, on images or an export the test makes."""

import ast
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from examples.dcgan_with_bssn import DCGAN, build_discriminator, build_generator
from keras_bssn import spectral, spectral_normalize
from keras_bssn.convert import normalized_layers
from training.export import export_generator
from training.networks import build_networks

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = ("dcgan_with_bssn", "gan_on_image_folder", "serve_generator")


def _run(example: str, *flags: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", f"examples.{example}", *map(str, flags)],
                          cwd=REPO, capture_output=True, text=True, timeout=600)


def _passed(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory) -> Path:
    """Twelve smooth colour images of mixed sizes and formats, some in a subfolder."""
    folder = tmp_path_factory.mktemp("images")
    (folder / "more").mkdir()
    rows, cols = np.mgrid[0:20, 0:24] / 24.0
    for index in range(12):
        image = np.stack([rows, cols, np.full_like(rows, index / 12)], axis=-1)
        path = folder / ("more" if index % 2 else ".") / f"{index:02d}"
        Image.fromarray(np.uint8(image * 255)).save(path.with_suffix(".jpg" if index % 3 else
                                                                     ".png"))
    return folder


def test_each_example_says_how_to_run_it_and_is_listed_in_the_readme():
    readme = (REPO / "examples" / "README.md").read_text()
    for example in EXAMPLES:
        docstring = ast.get_docstring(ast.parse((REPO / "examples" / f"{example}.py").read_text()))
        assert f"python -m examples.{example} " in docstring
        assert f"python -m examples.{example} " in readme


@pytest.mark.slow
def test_dcgan_with_bssn_trains_on_an_archive_of_images(image_folder, tmp_path):
    archive = tmp_path / "images.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(image_folder, arcname="images")
    grid = tmp_path / "dcgan.png"
    output = _passed(_run("dcgan_with_bssn", "--data-dir", archive, "--steps", 3,
                          "--batch-size", 4, "--image-size", 16, "--out", grid))
    assert re.search(r"^step 1: d_loss \S+, g_loss \S+$", output, re.MULTILINE)
    assert re.search(r"^step 3: d_loss ", output, re.MULTILINE)
    sigmas = dict(re.findall(r"^(sigma/\S+): (\S+)$", output, re.MULTILINE))
    assert sorted(sigmas) == ["sigma/conv1_view1", "sigma/conv1_view2", "sigma/conv2_view1",
                              "sigma/conv2_view2", "sigma/conv3_view1", "sigma/conv3_view2",
                              "sigma/logits"]
    assert all(0 < float(value) < 100 for value in sigmas.values())
    with Image.open(grid) as picture:
        assert (picture.format, picture.mode, picture.size) == ("PNG", "RGB", (64, 64))


def test_dcgan_train_step_advances_the_power_iteration_once_per_step():
    """One step stores u advanced once from the discriminator's weights before the update:
    not zero times (D called without training=True), not twice (the G update too)."""
    discriminator = spectral_normalize(build_discriminator(16), method="bssn", scale=1.2)
    gan = DCGAN(discriminator, build_generator(16))
    gan.compile(d_optimizer=keras.optimizers.Adam(1e-3), g_optimizer=keras.optimizers.Adam(1e-3))
    wrappers = normalized_layers(discriminator)
    expected = []
    for wrapper in wrappers:
        views = spectral.matrix_views(wrapper.layer.kernel.numpy(), wrapper.layout)
        expected += [spectral.power_iteration(view, vector.numpy())[1]
                     for view, vector in zip(views, wrapper.vectors)]
    real = np.random.default_rng(0).uniform(-1, 1, (4, 16, 16, 3)).astype("float32")
    gan.fit(real, batch_size=4, epochs=1, verbose=0)
    stored = [vector.numpy() for wrapper in wrappers for vector in wrapper.vectors]
    assert len(stored) == 7
    for after, want in zip(stored, expected):
        np.testing.assert_allclose(after, want, rtol=1e-4, atol=1e-6)


@pytest.mark.slow
def test_gan_on_image_folder_trains_the_project_gan(image_folder, tmp_path):
    grid = tmp_path / "gan.png"
    output = _passed(_run("gan_on_image_folder", "--data-dir", image_folder, "--steps", 2,
                          "--image-size", 16, "--batch-size", 4, "--n-dis", 2, "--out", grid))
    assert "Found 12 files." in output
    for step in (1, 2):
        assert re.search(rf"^step {step}: d_loss \S+, g_loss \S+, sigmas \S+ to \S+$", output,
                         re.MULTILINE)
    with Image.open(grid) as picture:  # 64 images, 8 a row, 2 pixels of padding
        assert (picture.format, picture.mode, picture.size) == ("PNG", "RGB", (146, 146))


@pytest.mark.slow
def test_serve_generator_calls_both_signatures_and_writes_the_seeded_images(tmp_path):
    generator, _ = build_networks("cnn", 8, latent_dim=16)
    # Weights away from their near-zero start, so that the images span many pixel values.
    generator.set_weights([weight * 30 for weight in generator.get_weights()])
    export = export_generator(generator, tmp_path / "export", {"step": 7})
    grid = tmp_path / "served.png"
    output = _passed(_run("serve_generator", "--model", export, "--num", 5, "--seed", 3,
                          "--out", grid))
    assert "metadata: {'latent_dim': 16, 'image_shape': [8, 8, 3], 'step': 7}" in output
    assert re.search(r"^generate: images uint8 \[5, 8, 8, 3\], range \[\d+, \d+\]$", output,
                     re.MULTILINE)
    low, high = map(float, re.search(r"serving_default: images float32 \[5, 8, 8, 3\], "
                                     r"range \[(\S+), (\S+)\]", output).groups())
    assert -1 <= low < high <= 1
    pixels = tf.saved_model.load(str(export)).signatures["generate"](
        num=tf.constant(5), seed=tf.constant(3, tf.int64))["images"].numpy()
    with Image.open(grid) as picture:  # 3 a row, no padding; the sixth cell is black
        cells = np.asarray(picture).reshape(2, 8, 3, 8, 3).swapaxes(1, 2).reshape(6, 8, 8, 3)
    np.testing.assert_array_equal(cells[:5], pixels)
    assert not cells[5].any()
    assert pixels.max() - pixels.min() > 100


def test_serve_generator_needs_tensorflow_alone():
    tree = ast.parse((REPO / "examples" / "serve_generator.py").read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree)
                if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom)}
    assert imported - set(sys.stdlib_module_names) == {"numpy", "tensorflow"}


@pytest.mark.slow
def test_a_missing_input_is_an_error_with_exit_2_and_no_traceback(tmp_path):
    missing = tmp_path / "missing"
    cases = {"dcgan_with_bssn": "--data-dir", "gan_on_image_folder": "--data-dir",
             "serve_generator": "--model"}
    # All at once: each spends its time starting TensorFlow.
    processes = {example: subprocess.Popen(
        [sys.executable, "-m", f"examples.{example}", flag, str(missing)], cwd=REPO,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for example, flag in cases.items()}
    for example, process in processes.items():
        _, stderr = process.communicate(timeout=600)
        assert process.returncode == 2, (example, stderr[-3000:])
        assert f"error: {cases[example]} {missing}: " in stderr
        assert "Traceback" not in stderr


def test_a_folder_without_images_is_an_error_with_exit_2_and_no_traceback(tmp_path):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("no images here")
    result = subprocess.run([sys.executable, "-m", "examples.gan_on_image_folder", "--data-dir",
                             str(tmp_path)], cwd=REPO, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 2, result.stderr[-3000:]
    assert f"error: --data-dir {tmp_path}: no .bmp, .gif, .jpeg, .jpg, .png images" in result.stderr
    assert "Traceback" not in result.stderr
