"""Images from a `.npz` or `.npy` file: which array, what shape and range it may have."""

from __future__ import annotations

import contextlib
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import tensorflow as tf

from training.data.preprocessing import Source, check_crop_size, to_square
from training.errors import DataError, DataPathError

# Keys tried after x_<split>, in this order.
_ARRAY_KEYS = ("x", "images", "arr_0")


def array_source(
    path: Path, split: str, image_size: int | None, crop_size: int | None, antialias: bool,
) -> Source:
    """Loads the images of a `.npz` or `.npy` file, in the array's order.

    Args:
        path: the file.
        split, image_size, crop_size, antialias: as for `load_images`.

    Returns:
        The array's images, square and uint8.
    """
    array = _read_array(path, split)
    images = _as_uint8(_with_three_channels(array, path), path)
    check_crop_size(crop_size, *images.shape[1:3], images=f"the images in {path}")
    size = image_size or crop_size or min(images.shape[1:3])
    dataset = tf.data.Dataset.from_tensor_slices(images)
    return Source(
        images=to_square(dataset, size, crop_size, resize=image_size is not None,
                         antialias=antialias),
        size=size,
        num_images=len(images),
    )


def _read_array(path: Path, split: str) -> np.ndarray:
    if not path.exists():
        raise DataPathError(f"Data path {path} does not exist; check --data-dir.")
    if path.suffix.lower() not in (".npz", ".npy"):
        raise DataError(
            f"--dataset npz expects a .npz or .npy file; got {path}. For image files use "
            "--dataset folder."
        )
    # No pickles: loading one runs arbitrary code from the file.
    with _numpy_read_errors(path):
        contents = np.load(path, allow_pickle=False)
    if isinstance(contents, np.ndarray):
        return contents
    with contents:
        key = _array_key(contents.files, path, split)
        with _numpy_read_errors(path):
            return contents[key]


@contextlib.contextmanager
def _numpy_read_errors(path: Path) -> Iterator[None]:
    """Turns NumPy's errors for unreadable files into one that names the file."""
    try:
        yield
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as error:
        raise DataError(f"Could not read {path} as a NumPy array file: {error}") from error


def _array_key(keys: list[str], path: Path, split: str) -> str:
    # x_train/x_test is the layout of Keras's own .npz datasets (mnist.npz).
    for key in (f"x_{split}", *_ARRAY_KEYS):
        if key in keys:
            return key
    if len(keys) == 1:
        return keys[0]
    raise DataError(
        f"{path} holds arrays {sorted(keys)}; expected images under one of "
        f"{['x_' + split, *_ARRAY_KEYS]} or a single array."
    )


def _with_three_channels(array: np.ndarray, path: Path) -> np.ndarray:
    """Returns (N, H, W, 3) images; grayscale (N, H, W) or (N, H, W, 1) is repeated to RGB.

    Two- and four-channel arrays are refused rather than guessed at: unlike an RGBA image
    file, an array does not say whether its fourth channel is alpha.
    """
    if array.ndim == 3 and array.shape[-1] == 3:
        raise DataError(
            f"{path} holds an array of shape {array.shape}: one RGB image, not a batch of "
            "grayscale ones? Save x[np.newaxis] for a single image."
        )
    if array.ndim == 3:
        array = array[..., np.newaxis]
    if array.ndim == 4 and array.shape[-1] == 1:
        return np.repeat(array, 3, axis=-1)
    if array.ndim == 4 and array.shape[-1] == 3:
        return array
    fix = "expected (N, H, W, 3) RGB or (N, H, W) grayscale images"
    if array.ndim == 4 and array.shape[1] in (1, 3):
        fix += "; this looks channels-first, so transpose it with x.transpose(0, 2, 3, 1)"
    elif array.ndim == 4 and array.shape[-1] == 4:
        fix += "; for RGBA keep the colour channels with x[..., :3]"
    raise DataError(f"{path} holds an array of shape {array.shape}: {fix}.")


def _as_uint8(images: np.ndarray, path: Path) -> np.ndarray:
    """Accepts uint8 images, or float images in [-1, 1] (quantised to uint8 like the rest).

    A float array with no negative value is refused: it is far more likely [0, 1] images
    than [-1, 1] images without a single dark pixel.
    """
    if len(images) == 0:
        raise DataError(f"{path} holds no images.")
    if images.dtype == np.uint8:
        return images
    if not np.issubdtype(images.dtype, np.floating):
        raise DataError(
            f"{path} holds {images.dtype} images; expected uint8 in [0, 255] or float in "
            "[-1, 1]. If the values are 0..255, convert with x.astype(np.uint8)."
        )
    low, high = float(np.min(images)), float(np.max(images))
    if not (-1.0 <= low < 0.0 and high <= 1.0):
        raise DataError(
            f"{path} holds {images.dtype} images in [{low:g}, {high:g}]; float images must be "
            "in [-1, 1]. Scale [0, 1] images with x * 2 - 1, or store 0..255 as uint8."
        )
    return np.round((images + 1.0) * 127.5).astype(np.uint8)
