"""Image grids and sample files: uint8 image batches to PNG grids and `.npz` arrays.

Writes are atomic (a temporary file beside the target, then `os.replace`), so a reader never
sees a half-written file and an interrupted write leaves the previous file in place.
"""

from __future__ import annotations

import contextlib
import math
import os
import pathlib
import uuid
import zipfile
from typing import BinaryIO, Iterator

import numpy as np
from PIL import Image

# PIL image mode for each supported channel count.
_PIL_MODES = {1: "L", 3: "RGB", 4: "RGBA"}
# A fixed zip entry time keeps `.npz` files byte-identical for identical images.
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)


def make_grid(
    images: np.ndarray, nrow: int | None = None, padding: int = 2, pad_value: int = 0
) -> np.ndarray:
    """Tile a batch of images into one image, row by row.

    Args:
        images: uint8 array `(num, H, W, C)`.
        nrow: images per row; defaults to `ceil(sqrt(num))`, a near-square grid.
        padding: pixels of `pad_value` around and between images.
        pad_value: the uint8 value of the padding and of the empty cells of the last row.

    Returns:
        uint8 array `(rows * (H + padding) + padding, cols * (W + padding) + padding, C)`,
        where `cols = min(nrow, num)` and `rows = ceil(num / cols)`.

    Example:

    ```python
    grid = make_grid(np.zeros((64, 32, 32, 3), np.uint8))  # (274, 274, 3)
    ```
    """
    images = np.asarray(images)
    if images.ndim != 4 or images.dtype != np.uint8 or len(images) == 0:
        raise ValueError(
            "`images` must be a non-empty uint8 array (num, H, W, C); "
            f"got {images.dtype} of shape {images.shape}."
        )
    num, height, width, channels = images.shape
    rows, cols = grid_layout(num, nrow)
    cell_height, cell_width = height + padding, width + padding
    grid = np.full(
        (rows * cell_height + padding, cols * cell_width + padding, channels),
        pad_value,
        np.uint8,
    )
    for index, image in enumerate(images):
        row, col = divmod(index, cols)
        top, left = padding + row * cell_height, padding + col * cell_width
        grid[top : top + height, left : left + width] = image
    return grid


def grid_layout(num: int, nrow: int | None = None) -> tuple[int, int]:
    """`(rows, columns)` of the grid `make_grid` draws for `num` images, `nrow` a row.

    Example:

    ```python
    grid_layout(10, nrow=4)  # (3, 4)
    ```
    """
    if nrow is not None and nrow < 1:
        raise ValueError(f"`nrow` must be >= 1; got {nrow}.")
    cols = min(nrow or math.ceil(math.sqrt(num)), num)
    return math.ceil(num / cols), cols


def save_grid_png(
    images: np.ndarray, path: str | os.PathLike, nrow: int | None = None, padding: int = 2
) -> pathlib.Path:
    """Write `make_grid(images, nrow, padding)` as a PNG file, atomically.

    Args:
        images: uint8 array `(num, H, W, C)` with 1 (grey), 3 (RGB) or 4 (RGBA) channels.
        path: the PNG file; missing parent folders are created.
        nrow: images per row; see `make_grid`.
        padding: pixels between images; see `make_grid`.

    Returns:
        The PNG file.

    Example:

    ```python
    save_grid_png(generated_uint8, "runs/cifar10/samples/step_001000.png", nrow=8)
    ```
    """
    grid = make_grid(images, nrow, padding)
    channels = grid.shape[-1]
    if channels not in _PIL_MODES:
        raise ValueError(f"PNG grids need 1, 3 or 4 channels; got {channels}.")
    picture = Image.fromarray(grid[..., 0] if channels == 1 else grid, _PIL_MODES[channels])
    with atomic_writer(path) as file:
        picture.save(file, format="PNG")
    return pathlib.Path(path)


def save_images_npz(images: np.ndarray, path: str | os.PathLike) -> pathlib.Path:
    """Write uint8 `images` to an `.npz` file under the key `images` (what FID tools read).

    Unlike `np.savez`, the file is byte-for-byte reproducible and written atomically.

    Example:

    ```python
    save_images_npz(generated_uint8, "samples.npz")
    np.load("samples.npz")["images"]
    ```
    """
    entry = zipfile.ZipInfo("images.npy", date_time=_ZIP_EPOCH)
    with atomic_writer(path) as file, zipfile.ZipFile(file, "w") as archive:
        # Streamed into the archive: no second in-memory copy of a large sample set.
        with archive.open(entry, "w", force_zip64=True) as member:
            np.lib.format.write_array(member, np.asarray(images))
    return pathlib.Path(path)


@contextlib.contextmanager
def atomic_writer(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """Open a binary file that replaces `path` only once the `with` block succeeds.

    Example:

    ```python
    with atomic_writer("grid.png") as file:
        picture.save(file, format="PNG")
    ```
    """
    target = pathlib.Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    # Beside the target (same filesystem, so `os.replace` is atomic); `open` rather than
    # `mkstemp` so the file gets the usual umask permissions, not 0600.
    temporary = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(temporary, "xb") as file:
            yield file
        os.replace(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)
