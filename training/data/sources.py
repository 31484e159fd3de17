"""Which loader a `--dataset` name selects, and the name of what it loads, for caches."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from training.data.archives import cache_entry, is_archive, path_key
from training.data.arrays import array_source
from training.data.folders import folder_source
from training.data.preprocessing import Source
from training.data.tfds_datasets import TFDS_SPECS, tfds_source
from training.errors import DataError, DataPathError

DATASETS = (*TFDS_SPECS, "folder", "npz")


def load_source(
    dataset: str, data_dir: str | None, split: str, image_size: int | None,
    crop_size: int | None = None, antialias: bool = True, skipped_log: Path | None = None,
) -> Source:
    """Checks the arguments of `load_images` and loads the uint8 images they name.

    Args:
        dataset, data_dir, split, image_size, crop_size, antialias: as for `load_images`.
        skipped_log: as for `make_train_dataset`.

    Returns:
        The source's square uint8 images.
    """
    if dataset not in DATASETS:
        raise DataError(f"Unknown dataset {dataset!r}; expected one of: {', '.join(DATASETS)}.")
    if image_size is not None and image_size < 1:
        raise DataError(f"image_size must be positive or None; got {image_size}.")
    if crop_size is not None and crop_size < 1:
        raise DataError(f"crop_size must be positive or None; got {crop_size}.")
    if dataset in TFDS_SPECS:
        return tfds_source(dataset, data_dir, split, image_size, crop_size, antialias)
    if data_dir is None:
        what = "a folder or .tar.gz of images" if dataset == "folder" else "a .npz or .npy file"
        raise DataError(f"--dataset {dataset} needs --data-dir: {what}.")
    if dataset == "folder":
        return folder_source(Path(data_dir).expanduser(), split, image_size, crop_size,
                             antialias, skipped_log)
    return array_source(Path(data_dir).expanduser(), split, image_size, crop_size, antialias)


def report_source(
    dataset: str, data_dir: str | None, split: str = "train", image_size: int | None = None,
    crop_size: int | None = None, antialias: bool = True,
    say: Callable[[str], None] = print,
) -> int | None:
    """Finds the images these arguments name and says what was found, for a person waiting
    on a command's start: how many images, and whether an archive was extracted into the
    cache or reused. An extraction (the longest wait of a start, about a minute for
    CIFAR-10's 60,000 files) is announced before it begins; the loaders then reuse it.

    Args:
        dataset, data_dir, split, image_size, crop_size, antialias: as for `load_images`.
        say: prints one line, e.g. `data: 50,000 images in cifar10.tar.gz (cache: reusing
            ...)`.

    Returns:
        The number of images (None when the source does not say).
    """
    cache = ""
    path = Path(data_dir).expanduser() if data_dir else None
    if dataset == "folder" and path and path.is_file() and is_archive(path):
        entry = cache_entry(path)
        if entry.is_dir():
            cache = f" (cache: reusing {entry})"
        else:
            say(f"data: extracting {data_dir} to {entry} (once: later runs reuse it)...")
            cache = f" (cache: extracted to {entry})"
    source = load_source(dataset, data_dir, split, image_size, crop_size, antialias)
    count = "images" if source.num_images is None else f"{source.num_images:,} images"
    where = f"TFDS {dataset}" if dataset in TFDS_SPECS else data_dir
    say(f"data: {count} in {where}{cache}")
    return source.num_images


def source_key(
    dataset: str, data_dir: str | None, image_size: int | None, crop_size: int | None = None,
    antialias: bool = True,
) -> str:
    """A name for the images these arguments load, for caches of what is computed from them.

    TFDS data sets are named by themselves; local files and folders also by a digest of
    their resolved path, size and modification time, so that statistics of one folder are
    never served for another, nor for an archive since replaced.

    Example:

    >>> source_key("cifar10", None, 32)
    'cifar10-32'

    Args:
        dataset, data_dir, image_size, crop_size, antialias: as for `load_images`.

    Returns:
        A name usable in file names.
    """
    size = "native" if image_size is None else str(image_size)
    if crop_size is not None:
        size = f"crop{crop_size}-{size}"
    if not antialias:
        size += "-aliased"
    if dataset in TFDS_SPECS or data_dir is None:
        return f"{dataset}-{size}"
    path = Path(data_dir).expanduser()
    if not path.exists():
        raise DataPathError(f"--data-dir {data_dir} does not exist; check the path.")
    return f"{dataset}-{path.name}-{path_key(path)}-{size}"
