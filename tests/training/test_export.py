"""Tests for `training.export`, the `training.generate` command and `training.images` grids."""

import datetime
import importlib.metadata
import json
import os
import pathlib
import shutil
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import keras_bssn
from training.export import (
    EXPORT_METADATA_FILE,
    ExportError,
    export_generator,
    load_export,
    read_export_metadata,
)
from training.generate import main as generate_main
from training.images import make_grid

LATENT_DIM = 16
IMAGE_SHAPE = (8, 8, 3)
METADATA = {"normalization": "bssn", "scale": 1.0, "dataset": "toy", "step": 7}

# Run by a fresh interpreter: loads the export with TensorFlow alone and reports what it saw.
# `import tensorflow` itself imports Keras when it is installed, so the script makes Keras,
# keras_bssn and training unimportable (a `None` entry in sys.modules) before importing it.
_LOADER_SCRIPT = """
import json, sys
BLOCKED = ("keras", "keras_bssn", "training")
sys.modules.update(dict.fromkeys(BLOCKED))
import numpy as np
import tensorflow as tf

export_dir, latents_file, images_file, samples_file = sys.argv[1:]
loaded = tf.saved_model.load(export_dir)
latents = tf.constant(np.load(latents_file))
images = loaded.signatures["serving_default"](latents=latents)["images"]
samples = loaded.signatures["generate"](num=tf.constant(4), seed=tf.constant(3, tf.int64))
np.save(images_file, images.numpy())
np.save(samples_file, samples["images"].numpy())
print(json.dumps({
    "imported": sorted(name for name in sys.modules
                       if name.split(".")[0] in BLOCKED and sys.modules[name] is not None),
    "dtype": images.dtype.name,
    "latent_dim": int(loaded.latent_dim.numpy()),
    "image_shape": loaded.image_shape.numpy().tolist(),
    "metadata": json.loads(loaded.metadata_json.numpy()),
}))
"""


def _make_generator() -> keras.Model:
    """A tiny DCGAN-style generator whose BatchNorm moving statistics are far from (0, 1)."""
    latents = keras.Input((LATENT_DIM,))
    x = keras.layers.Dense(4 * 4 * 16)(latents)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.Reshape((4, 4, 16))(x)
    x = keras.layers.Conv2DTranspose(8, 4, strides=2, padding="same")(x)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU()(x)
    images = keras.layers.Conv2DTranspose(3, 3, padding="same", activation="tanh")(x)
    generator = keras.Model(latents, images)
    rng = np.random.default_rng(0)
    for layer in generator.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            size = layer.moving_mean.shape
            layer.moving_mean.assign(rng.normal(0.0, 0.5, size))
            layer.moving_variance.assign(rng.uniform(0.3, 3.0, size))
    return generator


def _run(command: list) -> str:
    """Run `command` in a fresh process with TensorFlow's logging quiet; returns its stdout."""
    result = subprocess.run(
        [str(part) for part in command],
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """One export shared by the read-only tests, with reference outputs from the live model."""
    generator = _make_generator()
    latents = np.random.default_rng(1).normal(size=(5, LATENT_DIM)).astype("float32")
    path = export_generator(generator, tmp_path_factory.mktemp("exports") / "toy", METADATA)
    return {
        "path": path,
        "latents": latents,
        "inference": keras.ops.convert_to_numpy(generator(latents, training=False)),
        "training": keras.ops.convert_to_numpy(generator(latents, training=True)),
    }


def test_fresh_tensorflow_process_reproduces_inference_outputs(exported, tmp_path):
    # Precondition: the two BatchNorm modes really differ, so the check below can tell them apart.
    assert np.abs(exported["training"] - exported["inference"]).max() > 1e-2
    files = [tmp_path / name for name in ("latents.npy", "images.npy", "samples.npy")]
    np.save(files[0], exported["latents"])
    stdout = _run([sys.executable, "-c", _LOADER_SCRIPT, exported["path"], *files])
    report = json.loads(stdout.strip().splitlines()[-1])

    assert report["imported"] == []
    assert report["dtype"] == "float32"
    np.testing.assert_allclose(np.load(files[1]), exported["inference"], rtol=0, atol=1e-5)
    # Stateless sampling: another process draws exactly the images this one does.
    np.testing.assert_array_equal(np.load(files[2]), load_export(exported["path"]).generate(4, 3))
    assert report["latent_dim"] == LATENT_DIM
    assert report["image_shape"] == list(IMAGE_SHAPE)
    assert report["metadata"] == read_export_metadata(exported["path"])


def test_saved_model_cli_lists_both_signatures(exported):
    cli = shutil.which("saved_model_cli")
    command = [cli] if cli else [sys.executable, "-m", "tensorflow.python.tools.saved_model_cli"]
    stdout = _run([*command, "show", "--dir", exported["path"], "--all"])
    for expected in [
        "signature_def['serving_default']",
        "signature_def['generate']",
        "inputs['latents']",
        "inputs['num']",
        "inputs['seed']",
        "outputs['images']",
        "DT_UINT8",
    ]:
        assert expected in stdout


def test_generate_signature_is_seeded_and_decodes_documented_latents(exported):
    loaded = load_export(exported["path"])
    num = 300  # more than one internal chunk of 256
    images = loaded.generate(num, seed=5)

    assert images.dtype == np.uint8 and images.shape == (num, *IMAGE_SHAPE)
    np.testing.assert_array_equal(loaded.generate(num, seed=5), images)
    assert np.mean(loaded.generate(num, seed=6) != images) > 0.5
    # The documented recipe: stateless_normal([num, latent_dim], seed=[seed, 0]) -> uint8.
    latents = tf.random.stateless_normal([num, LATENT_DIM], seed=[5, 0])
    expected = np.round((np.clip(loaded(latents), -1, 1) + 1) * 127.5)
    assert np.abs(images.astype(int) - expected).max() <= 1


def test_metadata_asset_holds_caller_and_derived_fields(exported):
    asset = exported["path"] / "assets" / EXPORT_METADATA_FILE
    metadata = json.loads(asset.read_text())

    assert metadata.items() >= METADATA.items()
    assert metadata["latent_dim"] == LATENT_DIM
    assert metadata["image_shape"] == list(IMAGE_SHAPE)
    assert metadata["keras_bssn_version"] == keras_bssn.__version__
    assert datetime.datetime.fromisoformat(metadata["created"]).tzinfo is not None


def test_the_version_is_known_in_a_source_checkout(tmp_path, monkeypatch):
    # Run from a checkout, keras_bssn has no installed distribution metadata (or stale
    # metadata of an older install): the version comes from the imported package.
    def not_installed(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", not_installed)
    path = export_generator(_make_generator(), tmp_path / "toy", METADATA)
    assert read_export_metadata(path)["keras_bssn_version"] == keras_bssn.__version__


def test_metadata_contradicting_the_model_is_rejected_before_writing(tmp_path):
    with pytest.raises(ValueError, match=r"latent_dim.*32.*16"):
        export_generator(_make_generator(), tmp_path / "toy", {"latent_dim": 32})
    assert list(tmp_path.iterdir()) == []


def test_export_replaces_an_earlier_export(tmp_path):
    generator = _make_generator()
    path = tmp_path / "toy"
    export_generator(generator, path, {"step": 1})
    export_generator(generator, path, {"step": 2})

    assert load_export(path).metadata["step"] == 2
    assert [entry.name for entry in tmp_path.iterdir()] == ["toy"]


@pytest.mark.parametrize("umask, folder_mode, file_mode",
                         [(0o022, 0o755, 0o644), (0o027, 0o750, 0o640)])
def test_an_export_is_as_readable_as_the_umask_allows(tmp_path, umask, folder_mode, file_mode):
    # A model server often runs as another user than the one who trained.
    generator = _make_generator()
    previous = os.umask(umask)
    try:
        path = export_generator(generator, tmp_path / "toy", {"step": 1})
    finally:
        os.umask(previous)
    entries = [path, *path.rglob("*")]
    assert len(entries) > 4  # saved_model.pb, variables/, assets/ and their files
    modes = {entry.relative_to(tmp_path).as_posix(): entry.stat().st_mode & 0o777
             for entry in entries}
    assert modes == {name: folder_mode if (tmp_path / name).is_dir() else file_mode
                     for name in modes}


def test_failed_save_leaves_the_earlier_export_intact(tmp_path, monkeypatch):
    generator = _make_generator()
    path = tmp_path / "toy"
    export_generator(generator, path, {"step": 1})
    before = load_export(path).generate(2, seed=0)

    def save_half_then_crash(obj, export_dir, **kwargs):
        pathlib.Path(export_dir, "saved_model.pb").write_bytes(b"truncated")
        raise RuntimeError("disk full")

    monkeypatch.setattr(tf.saved_model, "save", save_half_then_crash)
    with pytest.raises(RuntimeError, match="disk full"):
        export_generator(generator, path, {"step": 2})
    monkeypatch.undo()

    assert load_export(path).metadata["step"] == 1
    np.testing.assert_array_equal(load_export(path).generate(2, seed=0), before)
    assert [entry.name for entry in tmp_path.iterdir()] == ["toy"]  # no staging left over


def test_export_refuses_to_replace_a_folder_that_is_not_an_export(tmp_path):
    (tmp_path / "notes.txt").write_text("keep me")
    with pytest.raises(ExportError, match="Refusing to replace"):
        export_generator(_make_generator(), tmp_path, METADATA)
    assert (tmp_path / "notes.txt").read_text() == "keep me"


def _plain_saved_model(path):
    tf.saved_model.save(tf.Module(), str(path))


def _export_without_generate_signature(path):
    module = tf.Module()
    module.serve = tf.function(
        lambda latents: {"images": latents},
        input_signature=[tf.TensorSpec([None, LATENT_DIM], tf.float32, name="latents")],
    )
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})
    metadata = {"latent_dim": LATENT_DIM, "image_shape": list(IMAGE_SHAPE)}
    (path / "assets" / EXPORT_METADATA_FILE).write_text(json.dumps(metadata))


@pytest.mark.parametrize(
    "make, missing",
    [
        (lambda path: None, "does not exist"),
        (lambda path: path.mkdir(), "no saved_model.pb"),
        (_plain_saved_model, f"no assets/{EXPORT_METADATA_FILE}"),
        (_export_without_generate_signature, "no 'generate' signature"),
    ],
    ids=["missing", "empty-folder", "plain-savedmodel", "no-generate-signature"],
)
def test_load_export_names_the_path_and_what_is_missing(tmp_path, make, missing):
    path = tmp_path / "candidate"
    make(path)
    with pytest.raises(ExportError) as error:
        load_export(path)
    assert str(path) in str(error.value)
    assert missing in str(error.value)


@pytest.mark.parametrize(
    "expected, shapes",
    [
        ({"expected_latent_dim": 32}, ["latent size 16", "32 was expected"]),
        ({"expected_image_shape": (32, 32, 3)}, ["image shape 8x8x3", "32x32x3 was expected"]),
    ],
    ids=["latent-dim", "image-shape"],
)
def test_load_export_names_both_shapes_on_mismatch(exported, expected, shapes):
    with pytest.raises(ExportError) as error:
        load_export(exported["path"], **expected)
    for shape in shapes:
        assert shape in str(error.value)
    load_export(exported["path"], expected_latent_dim=16, expected_image_shape=IMAGE_SHAPE)


def test_generate_command_writes_reproducible_grid_and_npz(exported, tmp_path, capsys):
    def generate(name, seed):
        argv = [str(exported["path"]), "--num", "10", "--nrow", "4", "--seed", str(seed)]
        png, npz = tmp_path / f"{name}.png", tmp_path / f"{name}.npz"
        assert generate_main([*argv, "--out", str(png), "--npz", str(npz)]) == 0
        return png, npz

    first, again, other = generate("a", 0), generate("b", 0), generate("c", 1)

    with Image.open(first[0]) as grid:
        assert grid.size == (4 * (8 + 2) + 2, 3 * (8 + 2) + 2)  # 4 columns, 3 rows, 2px padding
    images = np.load(first[1])["images"]
    np.testing.assert_array_equal(images, load_export(exported["path"]).generate(10, 0))
    assert [path.read_bytes() for path in first] == [path.read_bytes() for path in again]
    assert first[0].read_bytes() != other[0].read_bytes()
    printed = capsys.readouterr().out
    for fact in ["latent size:", "16", "8x8x3", "bssn", "toy", "step:", "7"]:
        assert fact in printed


def test_generate_command_reports_a_bad_export(tmp_path, capsys):
    status = generate_main([str(tmp_path / "nope"), "--out", str(tmp_path / "grid.png")])
    assert status == 2
    assert str(tmp_path / "nope") in capsys.readouterr().err
    assert not (tmp_path / "grid.png").exists()


def test_make_grid_places_images_row_major_between_padding():
    images = np.stack([np.full((2, 3, 3), value, np.uint8) for value in range(1, 6)])
    grid = make_grid(images, nrow=2, padding=1)

    assert grid.shape == (3 * 3 + 1, 2 * 4 + 1, 3)
    for index, value in enumerate(range(1, 6)):
        row, col = divmod(index, 2)
        cell = grid[1 + 3 * row : 3 + 3 * row, 1 + 4 * col : 4 + 4 * col]
        assert (cell == value).all()
    assert grid.sum() == sum(2 * 3 * 3 * value for value in range(1, 6))  # padding stays 0


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_a_mixed_precision_generator_exports_float32_in_and_out(tmp_path, policy):
    reference = _make_generator()
    keras.config.set_dtype_policy(policy)
    try:
        generator = _make_generator()
    finally:
        keras.config.set_dtype_policy("float32")
    generator.set_weights(reference.get_weights())
    latents = np.random.default_rng(1).normal(size=(5, LATENT_DIM)).astype("float32")
    path = export_generator(generator, tmp_path / "mixed", METADATA)
    serving = tf.saved_model.load(str(path)).signatures["serving_default"]

    assert serving.structured_input_signature[1]["latents"].dtype == tf.float32
    images = serving(latents=tf.constant(latents))["images"]
    assert images.dtype == tf.float32
    # 16-bit compute: close to the float32 generator, not equal to it.
    np.testing.assert_allclose(images.numpy(), reference(latents, training=False).numpy(),
                               atol=0.1)
