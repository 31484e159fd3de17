"""Folders of image files, or archives of one: listing in a fixed order, decoding, skipping.

Unreadable images. A copy or download cut short leaves empty or truncated files, and a failed
download an HTML page named `.jpg`. One such file among 15,000 must not end a run hours in,
and every resume of it at the same batch, so files that cannot be read or decoded are
skipped: a warning on stderr names each as the pipeline meets it, and one at the end of each
pass through the files says how many were skipped (a training run also appends both to
`skipped_images.log` in its run folder). Only a folder where no file decodes is an
error (`ValueError`, raised up front).

They are found where the pipeline decodes every file anyway, in its first pass. A check when
the folder is listed would cost every start a second pass: decoding CIFAR-10's 60,000 small
JPEGs took 12 s on two busy cores, and even reading each file's first bytes to check its
signature took 1.5 s with the files in the page cache and 16 s without (and a signature does
not reveal a truncated file). Up front, files are decoded only until one succeeds, which the
image size needs anyway. Skipping keeps the readable images in their order, so a resumed run
(`start_batch`) sees the same stream; with cached images (see `make_train_dataset`) the
warnings come once, otherwise once per epoch.
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

import tensorflow as tf

from training.data.archives import extract_once, is_archive
from training.data.preprocessing import Source, check_crop_size, decode_image, to_square
from training.errors import DataError, DataPathError

_IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")
_UNREADABLE = "empty, truncated or not a JPEG, PNG, BMP, GIF or WebP image"


def folder_source(
    data_dir: Path, split: str, image_size: int | None, crop_size: int | None,
    antialias: bool, skipped_log: Path | None = None,
) -> Source:
    """Loads the image files of a folder or archive, skipping those that cannot be decoded.

    Args:
        data_dir: a folder of images (flat or in class subfolders) or an archive of one.
        split, image_size, crop_size, antialias: as for `load_images`.
        skipped_log: a file to append the warnings about skipped images to, besides stderr.

    Returns:
        The images, in an order that mixes classes; `num_images` counts the files.

    Raises:
        ValueError: `data_dir` holds no image files, or none that decodes.
    """
    top = _image_folder(data_dir)
    paths = _image_files(_split_folder(top, split))
    # Named as inside the folder or archive: an archive's cache folder means nothing to users.
    names = [Path(path).relative_to(top).as_posix() for path in paths]
    height, width = _first_readable_shape(paths, names, data_dir)
    # The first image stands for the rest; one smaller still fails where it is decoded.
    check_crop_size(crop_size, height, width, images=f"the first image in {data_dir}")
    images = _decode_files(paths, names, data_dir, skipped_log)
    size = image_size or crop_size
    if size is None:
        images = images.map(lambda path, image: _checked_shape(path, image, (height, width, 3)))
        size = min(height, width)
    else:
        images = images.map(lambda path, image: image)
    return Source(
        images=to_square(images, size, crop_size, resize=image_size is not None,
                         antialias=antialias),
        size=size,
        num_images=len(paths),
    )


def _image_folder(data_dir: Path) -> Path:
    if not data_dir.exists():
        raise DataPathError(f"Data path {data_dir} does not exist; check --data-dir (a folder of "
                            "images or a .tar.gz of one).")
    if data_dir.is_dir():
        return data_dir
    if not is_archive(data_dir):
        raise DataError(
            f"--dataset folder expects a folder of images or a .tar.gz/.tgz of one; got "
            f"{data_dir}. For a .npz/.npy array use --dataset npz."
        )
    return extract_once(data_dir)


def _split_folder(folder: Path, split: str) -> Path:
    # Archives often wrap everything in one top-level folder (celeba/img_align_celeba/...).
    while len(entries := _visible_entries(folder)) == 1 and entries[0].is_dir():
        folder = entries[0]
    split_folder = folder / split
    return split_folder if split_folder.is_dir() else folder


def _visible_entries(folder: Path) -> list[Path]:
    # Hidden files include macOS's "._name.jpg" resource forks, which tar archives made on
    # a Mac carry and which are not images.
    return [entry for entry in folder.iterdir() if not entry.name.startswith(".")]


def _image_files(root: Path) -> list[str]:
    """Image files under `root`, in a fixed order that mixes classes.

    Sorting by a hash of the relative path gives the same order on every machine, and makes
    any prefix a fair sample, as with TFDS's pre-shuffled files: evaluation code takes the
    first N real images, which in alphabetical order would all be of one class.
    """
    keyed_paths = []
    for folder, subfolders, files in os.walk(root, followlinks=True):
        subfolders[:] = [name for name in subfolders if not name.startswith(".")]
        relative_folder = Path(folder).relative_to(root)
        for name in files:
            if not name.startswith(".") and name.lower().endswith(_IMAGE_EXTENSIONS):
                key = hashlib.sha256((relative_folder / name).as_posix().encode()).digest()
                keyed_paths.append((key, os.path.join(folder, name)))
    if not keyed_paths:
        raise DataError(f"No image files ({', '.join(_IMAGE_EXTENSIONS)}) found in {root}.")
    return [path for _, path in sorted(keyed_paths)]


def _first_readable_shape(paths: list[str], names: list[str], data_dir: Path) -> tuple[int, int]:
    """The height and width of the first image that decodes; an error when none does."""
    for path in paths:
        try:
            image = decode_image(tf.io.read_file(path))
        except tf.errors.OpError:
            continue  # Warned of when the pipeline skips it.
        return int(image.shape[0]), int(image.shape[1])
    examples = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
    raise DataError(
        f"None of the {len(paths)} image files in {data_dir} can be read as an image "
        f"({_UNREADABLE}): {examples}. Replace them with complete copies (download or extract "
        "the data set again), or point --data-dir at the images."
    )


def _decode_files(paths: list[str], names: list[str], data_dir: Path,
                  skipped_log: Path | None = None) -> tf.data.Dataset:
    """Decodes image files to uint8 RGB, in order, as (path, image) pairs.

    Grayscale images become RGB; an alpha channel is dropped (transparent pixels keep their
    stored colour); animated GIFs give their first frame. A file that cannot be read or
    decoded is skipped with a warning naming it (see the module docstring); a pass in which
    no file could be read, as when the files were deleted after being listed, ends with an
    error naming the folder.
    """
    num_files = len(paths)
    all_names = tf.constant(names)
    skip_warning = f"warning: skipped unreadable image in {data_dir}: "
    streams = [sys.stderr] + ([f"file://{Path(skipped_log).resolve()}"] if skipped_log else [])

    def warn_if(condition: tf.Tensor, message: tf.Tensor) -> None:
        def print_message() -> tf.Tensor:
            for stream in streams:
                tf.print(message, output_stream=stream)
            return tf.constant(True)

        tf.cond(condition, print_message, lambda: tf.constant(False))

    def decode(index: tf.Tensor, path: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        return index, path, decode_image(tf.io.read_file(path))

    def warn_of_skipped(state: tuple, element: tuple) -> tuple:
        expected, num_skipped = state
        index, path, image = element
        skipped = all_names[expected:index]
        num_skipped += index - expected
        at_end = tf.equal(index, num_files)
        # "missing": deleted since listed, which only the pipeline can find.
        lines = tf.strings.join([skip_warning, skipped, f" (missing, {_UNREADABLE})"])
        warn_if(tf.size(skipped) > 0, tf.strings.reduce_join(lines, separator="\n"))
        warn_if(at_end & (num_skipped > 0), tf.strings.join([
            "warning: skipped ", tf.strings.as_string(num_skipped),
            f" unreadable image(s) of {num_files} in {data_dir}; using the other ",
            tf.strings.as_string(num_files - num_skipped), ".",
        ]))
        assertion = tf.debugging.Assert(~(at_end & tf.equal(num_skipped, num_files)), [
            f"None of the {num_files} image files in {data_dir} could be read this time "
            "(deleted or damaged since they were listed?)."
        ])
        with tf.control_dependencies([assertion]):
            return (index + 1, num_skipped), (tf.identity(index), path, image)

    # Decode errors raised inside tf.data do not say which file failed. Instead failures are
    # dropped, and a gap in the running index names the files; the end marker catches
    # failures of the last files. Order must be deterministic for the index to line up.
    decoded = (
        tf.data.Dataset.from_tensor_slices(tf.constant(paths))
        .enumerate()
        .map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        .ignore_errors()
    )
    end_marker = tf.data.Dataset.from_tensors(
        (tf.constant(num_files, tf.int64), tf.constant(""), tf.zeros((0, 0, 3), tf.uint8))
    )
    start = (tf.constant(0, tf.int64), tf.constant(0, tf.int64))
    checked = decoded.concatenate(end_marker).scan(start, warn_of_skipped)
    return checked.filter(lambda index, path, image: index < num_files).map(
        lambda index, path, image: (path, image)
    )


def _checked_shape(path: tf.Tensor, image: tf.Tensor, expected: tuple[int, int, int]) -> tf.Tensor:
    """Returns `image`, failing with an error naming its file unless its shape is `expected`."""
    message = tf.strings.format(
        "Image file {} has shape {} but the first image has shape "
        f"[{' '.join(map(str, expected))}]; pass image_size (--image-size) to crop and resize "
        "all images to one size.",
        [path, tf.shape(image)],
    )
    assertion = tf.debugging.Assert(tf.reduce_all(tf.equal(tf.shape(image), expected)), [message])
    with tf.control_dependencies([assertion]):
        return tf.identity(image)
