"""Export a trained generator as a self-contained TensorFlow SavedModel, and load it back.

An export folder is a plain SavedModel with two signatures:

* `serving_default`: `latents` float32 `[None, latent_dim]` -> `{"images": float32 in [-1, 1]}`.
* `generate`: `num` int32 scalar, `seed` int64 scalar -> `{"images": uint8 [num, H, W, C]}`,
  from latents `tf.random.stateless_normal([num, latent_dim], seed=[seed, 0])`, so a seed gives
  the same images in any process.

Its metadata is written to `assets/keras_bssn_export.json` and kept on the saved object as the
variables `metadata_json`, `latent_dim` and `image_shape`. The object graph holds only
variables and traced functions, never Keras objects, so `tf.saved_model.load` needs neither
Keras nor `keras_bssn`. See `saved_models/README.md`.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import json
import os
import pathlib
import secrets
import shutil
from typing import Any

import keras
import numpy as np
import tensorflow as tf

import keras_bssn
from training.errors import UserError

EXPORT_METADATA_FILE = "keras_bssn_export.json"
EXPORT_FORMAT = "keras_bssn.generator"
EXPORT_FORMAT_VERSION = 1
SERVING_SIGNATURE = "serving_default"
GENERATE_SIGNATURE = "generate"

# Signature name -> (input names, output names): the contract checked by `load_export`.
_SIGNATURES = {
    SERVING_SIGNATURE: ({"latents"}, {"images"}),
    GENERATE_SIGNATURE: ({"num", "seed"}, {"images"}),
}
# `generate` runs the generator on this many latents at a time, so asking for the tens of
# thousands of samples FID needs does not hold every activation in memory at once.
_GENERATE_CHUNK_SIZE = 256
# Labels for `describe_export`, in display order; other metadata keys follow, sorted.
_DESCRIBED_FIELDS = {
    "latent_dim": "latent size",
    "image_shape": "image shape",
    "normalization": "normalization",
    "scale": "scale",
    "dataset": "data set",
    "step": "step",
    "keras_bssn_version": "keras_bssn",
    "created": "created",
}


class ExportError(UserError, ValueError):
    """A path is not a usable generator export, or not the one the caller expected."""


def export_generator(
    generator: keras.Model, path: str | os.PathLike, metadata: dict[str, Any]
) -> pathlib.Path:
    """Write `generator` as a SavedModel folder at `path`, atomically replacing an old export.

    The SavedModel is written to a temporary folder beside `path` and renamed into place, so
    a failure part way leaves any previous export at `path` as it was.

    Args:
        generator: maps float32 latents `(batch, latent_dim)` to images `(batch, H, W, C)` in
            [-1, 1]. It is traced with `training=False`, so BatchNormalization uses its moving
            statistics.
        path: the export folder, e.g. `saved_models/cifar10_bssn`. An existing folder there
            is replaced only if it is empty or an earlier export.
        metadata: JSON-serializable facts to record, e.g. `normalization`, `scale`,
            `dataset`, `step`. `latent_dim` and `image_shape` are derived from the model;
            `keras_bssn_version` and `created` are filled in unless given.

    Returns:
        The export folder.

    Example:

    ```python
    export_generator(gan.generator, "saved_models/cifar10_bssn",
                     {"normalization": "bssn", "scale": 1.0, "dataset": "cifar10",
                      "step": 100_000})
    ```
    """
    target = pathlib.Path(path)
    check_export_path(target)
    full_metadata = _complete_metadata(generator, metadata)
    module = _GeneratorModule(generator, full_metadata)
    target.parent.mkdir(parents=True, exist_ok=True)
    # Same parent, hence same filesystem: the final renames are atomic. Made by `mkdir`, which
    # applies the umask as for any folder a user makes (`tempfile.mkdtemp` makes it 0700: an
    # export unreadable to the other users of a shared model folder or serving host).
    staging = target.parent / f".{target.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}"
    staging.mkdir()
    try:
        tf.saved_model.save(
            module,
            str(staging),
            signatures={SERVING_SIGNATURE: module.serve, GENERATE_SIGNATURE: module.generate},
        )
        _write_metadata_file(staging, full_metadata)
        _swap_into_place(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


@dataclasses.dataclass(frozen=True)
class LoadedGenerator:
    """A loaded export: its metadata and NumPy front-ends to its two signatures.

    Attributes:
        path: the export folder.
        metadata: the contents of `assets/keras_bssn_export.json`.
        saved_model: the object `tf.saved_model.load` returned.
    """

    path: pathlib.Path
    metadata: dict[str, Any]
    saved_model: Any

    @property
    def latent_dim(self) -> int:
        return int(self.metadata["latent_dim"])

    @property
    def image_shape(self) -> tuple[int, ...]:
        return tuple(self.metadata["image_shape"])

    def __call__(self, latents: np.ndarray) -> np.ndarray:
        """Images, float32 in [-1, 1], for float32 `latents` of shape `(batch, latent_dim)`."""
        signature = self.saved_model.signatures[SERVING_SIGNATURE]
        return signature(latents=tf.convert_to_tensor(latents, tf.float32))["images"].numpy()

    def generate(self, num: int, seed: int) -> np.ndarray:
        """`num` uint8 images `(num, H, W, C)`, the same for the same `seed` in any process."""
        signature = self.saved_model.signatures[GENERATE_SIGNATURE]
        outputs = signature(num=tf.constant(num, tf.int32), seed=tf.constant(seed, tf.int64))
        return outputs["images"].numpy()


def load_export(
    path: str | os.PathLike,
    expected_latent_dim: int | None = None,
    expected_image_shape: tuple[int, ...] | None = None,
) -> LoadedGenerator:
    """Load an export written by `export_generator`, checking it is one and has the shapes wanted.

    Args:
        path: the export folder.
        expected_latent_dim: if given, the latent size the export must have.
        expected_image_shape: if given, the `(H, W, C)` the export's images must have.

    Returns:
        A `LoadedGenerator`.

    Raises:
        ExportError: `path` is not a SavedModel, lacks the metadata or a signature, or its
            shapes differ from the expected ones.

    Example:

    ```python
    gen = load_export("saved_models/cifar10_bssn", expected_image_shape=(32, 32, 3))
    images = gen.generate(num=64, seed=0)  # uint8 (64, 32, 32, 3)
    ```
    """
    export_dir = pathlib.Path(path)
    metadata = read_export_metadata(export_dir)
    _check_expected_shapes(export_dir, metadata, expected_latent_dim, expected_image_shape)
    try:
        saved_model = tf.saved_model.load(str(export_dir))
    except (OSError, tf.errors.OpError) as error:  # e.g. its variables/ missing or damaged
        raise ExportError(f"Generator export {str(export_dir)!r} cannot be loaded: "
                          f"{str(error).splitlines()[0]} Export it again.") from None
    _check_signatures(export_dir, saved_model)
    return LoadedGenerator(export_dir, metadata, saved_model)


def read_export_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The metadata of the export at `path`, read without loading the model.

    Raises:
        ExportError: `path` is not a SavedModel or has no valid export metadata.
    """
    export_dir = pathlib.Path(path)
    if not export_dir.is_dir():
        missing = "does not exist" if not export_dir.exists() else "is not a directory"
        raise ExportError(f"Generator export {str(export_dir)!r} {missing}.")
    if not (export_dir / "saved_model.pb").is_file():
        raise ExportError(
            f"{str(export_dir)!r} is not a TensorFlow SavedModel: it has no saved_model.pb."
        )
    metadata_file = export_dir / "assets" / EXPORT_METADATA_FILE
    if not metadata_file.is_file():
        raise ExportError(
            f"{str(export_dir)!r} is a SavedModel but not a keras_bssn generator export: it "
            f"has no assets/{EXPORT_METADATA_FILE} (write exports with export_generator)."
        )
    try:
        metadata = json.loads(metadata_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ExportError(f"{str(metadata_file)!r} is not valid JSON: {error}") from error
    if not isinstance(metadata, dict):
        raise ExportError(f"{str(metadata_file)!r} does not hold a JSON object.")
    missing_keys = sorted({"latent_dim", "image_shape"} - set(metadata))
    if missing_keys:
        raise ExportError(f"{str(metadata_file)!r} lacks the keys {missing_keys}.")
    return metadata


def describe_export(path: str | os.PathLike) -> str:
    """A human-readable summary of the export's metadata, one field a line.

    Example:

    ```python
    print(describe_export("saved_models/cifar10_bssn"))
    ```
    """
    metadata = read_export_metadata(path)
    lines = [f"Generator export {os.fspath(path)}"]
    for key, label in _DESCRIBED_FIELDS.items():
        lines.append(f"  {label + ':':<15} {_format_value(metadata.get(key, 'not recorded'))}")
    for key in sorted(set(metadata) - set(_DESCRIBED_FIELDS)):
        lines.append(f"  {key + ':':<15} {_format_value(metadata[key])}")
    return "\n".join(lines)


class _GeneratorModule(tf.Module):
    """What gets saved: the two endpoints, the generator's variables and the metadata."""

    def __init__(self, generator: keras.Model, metadata: dict[str, Any]):
        super().__init__(name="keras_bssn_generator")
        self._latent_dim = metadata["latent_dim"]
        self._image_shape = tuple(metadata["image_shape"])
        # Only the variables are tracked, not the Keras model (a `partial` is not trackable):
        # the saved object graph then holds no Keras or keras_bssn layer objects to revive.
        self._images = functools.partial(_inference_images, generator)
        self.generator_variables = list(generator.variables)
        # Plain tensors on a module are not saved; variables are, so loaders can read these.
        self.latent_dim = tf.Variable(self._latent_dim, trainable=False, name="latent_dim")
        self.image_shape = tf.Variable(self._image_shape, trainable=False, name="image_shape")
        self.metadata_json = tf.Variable(
            json.dumps(metadata, sort_keys=True), trainable=False, name="metadata_json"
        )
        self.serve = tf.function(
            self._serve,
            input_signature=[
                tf.TensorSpec([None, self._latent_dim], tf.float32, name="latents")
            ],
        )
        self.generate = tf.function(
            self._generate,
            input_signature=[
                tf.TensorSpec([], tf.int32, name="num"),
                tf.TensorSpec([], tf.int64, name="seed"),
            ],
        )

    def _serve(self, latents: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"images": self._images(latents)}

    def _generate(self, num: tf.Tensor, seed: tf.Tensor) -> dict[str, tf.Tensor]:
        latents = tf.random.stateless_normal(
            tf.stack([num, self._latent_dim]), seed=tf.stack([seed, tf.constant(0, tf.int64)])
        )
        chunks = tf.TensorArray(
            tf.uint8,
            size=0,
            dynamic_size=True,
            infer_shape=False,
            element_shape=tf.TensorShape([None, *self._image_shape]),
        )
        for start in tf.range(0, num, _GENERATE_CHUNK_SIZE):
            chunk = latents[start : start + _GENERATE_CHUNK_SIZE]
            chunks = chunks.write(chunks.size(), _to_uint8(self._images(chunk)))
        return {"images": chunks.concat()}


def _inference_images(generator: keras.Model, latents: tf.Tensor) -> tf.Tensor:
    # float32 out even for a mixed-precision generator: the signature promises float32.
    return tf.cast(generator(latents, training=False), tf.float32)


def _to_uint8(images: tf.Tensor) -> tf.Tensor:
    pixels = (tf.clip_by_value(images, -1.0, 1.0) + 1.0) * 127.5
    return tf.cast(tf.round(pixels), tf.uint8)


def _complete_metadata(generator: keras.Model, metadata: dict[str, Any]) -> dict[str, Any]:
    """The caller's metadata plus the derived shapes, version and time, as plain JSON values."""
    latent_dim, image_shape = _generator_shapes(generator, metadata.get("latent_dim"))
    derived = {"latent_dim": latent_dim, "image_shape": list(image_shape)}
    for key, value in derived.items():
        if key in metadata and _to_json_value(metadata[key]) != value:
            raise ValueError(
                f"metadata[{key!r}] is {metadata[key]!r} but the generator has {value!r}."
            )
    defaults = {
        "format": EXPORT_FORMAT,
        "format_version": EXPORT_FORMAT_VERSION,
        # The imported package's own version: right in a source checkout too, where no
        # installed distribution metadata exists (or stale metadata from an older install).
        "keras_bssn_version": keras_bssn.__version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    return _to_json_value({**defaults, **metadata, **derived})


def _generator_shapes(
    generator: keras.Model, given_latent_dim: int | None
) -> tuple[int, tuple[int, ...]]:
    """`(latent_dim, image_shape)`: from the model's input spec when it has one, else the
    caller's `latent_dim`; the image shape from one probe call, which works for any model."""
    try:
        latent_dim = generator.input_shape[-1]
    except (AttributeError, ValueError):  # a subclassed model declares no input
        latent_dim = given_latent_dim
    if latent_dim is None:
        raise ValueError(
            "Cannot tell the generator's latent size: it declares no input shape. "
            "Pass metadata={'latent_dim': ...}."
        )
    probe = generator(np.zeros((1, latent_dim), np.float32), training=False)
    if len(probe.shape) != 4:
        raise ValueError(
            f"The generator must return images (batch, H, W, C); got shape {tuple(probe.shape)}."
        )
    return int(latent_dim), tuple(int(dim) for dim in probe.shape[1:])


def _to_json_value(value: Any) -> Any:
    """`value` as plain JSON types (tuples become lists, NumPy scalars numbers)."""

    def convert(obj: Any) -> Any:
        if isinstance(obj, (np.generic, np.ndarray)):
            return obj.tolist()
        if isinstance(obj, os.PathLike):
            return os.fspath(obj)
        raise TypeError(f"export metadata value {obj!r} ({type(obj).__name__}) is not JSON")

    return json.loads(json.dumps(value, default=convert))


def check_export_path(target: pathlib.Path) -> None:
    """Checks that `export_generator` may write at `target`: nothing is there, or an empty
    folder, or an earlier export. Guards against e.g. `export_generator(g, "saved_models")`
    deleting every export.

    Raises:
        ExportError: something else is there.
    """
    if target.exists() and not (
        (target / "saved_model.pb").is_file() or (target.is_dir() and not any(target.iterdir()))
    ):
        raise ExportError(
            f"Refusing to replace {str(target)!r}: it exists and is not an earlier export "
            "(no saved_model.pb) nor an empty folder. Move it aside, or export under another "
            "name."
        )


def _write_metadata_file(export_dir: pathlib.Path, metadata: dict[str, Any]) -> None:
    assets = export_dir / "assets"
    assets.mkdir(exist_ok=True)
    (assets / EXPORT_METADATA_FILE).write_text(json.dumps(metadata, indent=2, sort_keys=True))


def _swap_into_place(staging: pathlib.Path, target: pathlib.Path) -> None:
    """Rename `staging` to `target`; an existing `target` is moved aside first, then deleted."""
    if not target.exists():
        os.rename(staging, target)
        return
    aside = staging.with_name(staging.name + ".old")
    os.rename(target, aside)
    try:
        os.rename(staging, target)
    except BaseException:
        os.rename(aside, target)
        raise
    shutil.rmtree(aside)


def _check_expected_shapes(
    export_dir: pathlib.Path,
    metadata: dict[str, Any],
    expected_latent_dim: int | None,
    expected_image_shape: tuple[int, ...] | None,
) -> None:
    checks = [
        ("latent size", expected_latent_dim, metadata["latent_dim"]),
        ("image shape", expected_image_shape, metadata["image_shape"]),
    ]
    for what, expected, actual in checks:
        if expected is not None and _to_json_value(expected) != actual:
            raise ExportError(
                f"Generator export {str(export_dir)!r} has {what} {_format_value(actual)}, "
                f"but {_format_value(_to_json_value(expected))} was expected."
            )


def _check_signatures(export_dir: pathlib.Path, saved_model: Any) -> None:
    problems = []
    for name, (inputs, outputs) in _SIGNATURES.items():
        if name not in saved_model.signatures:
            problems.append(f"no {name!r} signature")
            continue
        signature = saved_model.signatures[name]
        actual_inputs = set(signature.structured_input_signature[1])
        actual_outputs = set(signature.structured_outputs)
        if actual_inputs != inputs or actual_outputs != outputs:
            problems.append(
                f"{name!r} maps {sorted(actual_inputs)} -> {sorted(actual_outputs)} "
                f"instead of {sorted(inputs)} -> {sorted(outputs)}"
            )
    if problems:
        raise ExportError(
            f"Generator export {str(export_dir)!r} is incomplete: {'; '.join(problems)}."
        )


def _format_value(value: Any) -> str:
    if isinstance(value, list) and all(isinstance(dim, int) for dim in value):
        return "x".join(map(str, value))  # a shape: 32x32x3
    return str(value)
