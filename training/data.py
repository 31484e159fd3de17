"""Input pipelines: real images as float32 in [-1, 1], the range the generators produce.

Three kinds of source, all yielding square RGB images of one size:

- TFDS datasets by name, preprocessed as in the paper: `cifar10` (32x32), `stl10` (96x96
  resized to 48x48), `celeb_a` (centre crop 128x128 of the aligned 178x218 faces, resized to
  64x64) and `imagenet2012` (largest centred square, resized to 128x128).
- `folder`: a folder of image files, or a `.tar.gz` of one (extracted once into a cache).
- `npz`: a `.npz` or `.npy` file holding an image array.

Images stay uint8 until the very end, as PIL-based reference pipelines keep them, so in-memory
caches and shuffle buffers take a quarter of the memory float32 would.
"""

import contextlib
import dataclasses
import gzip
import hashlib
import os
import shutil
import tarfile
import tempfile
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds


@dataclasses.dataclass(frozen=True)
class _TfdsSpec:
    """How one TFDS dataset becomes the paper's training images.

    Attributes:
        image_size: output side when the caller gives none (the paper's).
        crop_size: side of the centred square cropped first; None crops the largest one.
        splits: split names of this module that TFDS spells differently.
        fix: what to do when TFDS cannot get the data.
    """

    image_size: int
    fix: str
    crop_size: int | None = None
    splits: dict[str, str] = dataclasses.field(default_factory=dict)


_TFDS_SPECS = {
    "cifar10": _TfdsSpec(
        image_size=32,
        fix="Without internet access, use --dataset folder "
        "--data-dir ../shared/data/cifar10-jpeg.tar.gz (the same images as JPEG).",
    ),
    # "train" is unlabelled+train (105k images), as in common GAN code; the paper names only
    # the 100k unlabelled images, which split="unlabelled" gives.
    "stl10": _TfdsSpec(
        image_size=48,
        splits={"train": "unlabelled+train"},
        fix="Without internet access, use --dataset folder --data-dir <folder or .tar.gz "
        "of STL-10 images> --image-size 48.",
    ),
    "celeb_a": _TfdsSpec(
        image_size=64,
        crop_size=128,
        fix="Without internet access (TFDS fetches CelebA from Google Drive, which often "
        "refuses), use --dataset folder --data-dir <img_align_celeba folder or .tar.gz> "
        "--image-size 64 --crop-size 128 (the paper's crop).",
    ),
    "imagenet2012": _TfdsSpec(
        image_size=128,
        fix="ImageNet is never downloaded automatically: put ILSVRC2012_img_train.tar and "
        "ILSVRC2012_img_val.tar from image-net.org in --data-dir (read here as TFDS's "
        "manual download folder), or use --dataset folder --data-dir <folder of images>.",
    ),
}

DATASETS = (*_TFDS_SPECS, "folder", "npz")

_IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")
_ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".tar.bz2", ".tar.xz")
_ARRAY_KEYS = ("x", "images", "arr_0")
_CACHE_ENV = "KERAS_BSSN_CACHE"

# Above this many bytes of uint8 images, `cache=True` reads from the source every epoch
# instead: ImageNet at 128x128 (63 GB) does not fit in memory, CelebA at 64x64 (2 GB) does.
MEMORY_CACHE_LIMIT_BYTES = 4 * 2**30


@dataclasses.dataclass(frozen=True)
class _Source:
    """uint8 images of shape (size, size, 3), and how many there are (None when unknown)."""

    images: tf.data.Dataset
    size: int
    num_images: int | None


def load_images(
    dataset: str,
    data_dir: str | None = None,
    split: str = "train",
    image_size: int | None = None,
    crop_size: int | None = None,
    antialias: bool = True,
) -> tf.data.Dataset:
    """Loads images in a fixed order, as float32 in [-1, 1] of shape (S, S, 3).

    Unbatched: batch (and prefetch) it for evaluation, or use `make_train_dataset` to train.
    Folder images come in an order that mixes classes, so the first N are a fair sample.
    Images are centre-cropped to a `crop_size` square, by default their largest square
    (CelebA from TFDS: 128x128, as in the paper).
    Resizing uses antialiased bilinear interpolation, which matches PIL's (and so
    torchvision's) bilinear resize to within rounding; plain bilinear aliases when
    downsampling by 2 as STL-10 and CelebA need. `antialias=False` gives plain bilinear, as
    the official BSN code's ImageNet loader (`cv2.resize`, INTER_LINEAR) does. Resized images
    are rounded back to uint8.

    Args:
        dataset: one of `DATASETS`.
        data_dir: for TFDS datasets, the TFDS data folder (None: TFDS's default; for
            `imagenet2012` also the folder holding the manually downloaded tars). For
            `folder`, a folder of images (flat or in class subfolders) or a `.tar.gz`/`.tgz`
            of one, extracted once into `$KERAS_BSSN_CACHE/datasets` (default
            `~/.cache/keras_bssn/datasets`); a subfolder named like `split` is used when
            there is one, else all of it. For `npz`, a `.npz` or `.npy` file (uint8, or
            float in [-1, 1]) with the images under `x_<split>`, `x`, `images`, `arr_0` or
            as its only array.
        split: "train" or "test"; TFDS datasets also take their own split names and
            slices such as "train[:10%]".
        image_size: side S of the output images; None keeps the dataset's reference size
            (TFDS datasets), the crop's size, or the images' own size (then all images must
            share one size).
        crop_size: side of the centred square cut before resizing; None takes the data
            set's reference crop (TFDS `celeb_a`: 128) or the largest square. Give 128 for
            a folder of aligned CelebA faces to match the paper.
        antialias: antialiased (True) or plain (False) bilinear resizing.

    Returns:
        A `tf.data.Dataset` of float32 images in [-1, 1].
    """
    source = _load_source(dataset, data_dir, split, image_size, crop_size, antialias)
    return source.images.map(_to_unit_range, num_parallel_calls=tf.data.AUTOTUNE)


def make_train_dataset(
    dataset: str,
    data_dir: str | None,
    batch_size: int,
    image_size: int | None = None,
    split: str = "train",
    seed: int | None = None,
    shuffle_buffer: int = 10_000,
    cache: bool = True,
    start_batch: int = 0,
    crop_size: int | None = None,
    antialias: bool = True,
) -> tf.data.Dataset:
    """Endless shuffled batches of float32 images in [-1, 1], shaped (batch_size, S, S, 3).

    Args:
        dataset, data_dir, split, image_size, crop_size, antialias: as for `load_images`.
        batch_size: the global batch size; `strategy.experimental_distribute_dataset`
            splits each batch between replicas.
        seed: shuffle seed (combined with TensorFlow's global seed, as tf.data does); the
            order changes every epoch but repeats run to run. None shuffles differently
            each run.
        shuffle_buffer: number of images the shuffle draws from.
        cache: keep decoded images in memory after the first epoch, so that decoding runs
            once, unless they would take more than `MEMORY_CACHE_LIMIT_BYTES`.
        start_batch: batches a resumed run has already trained on. With a seed and cached
            images the stream continues exactly where it stopped, as if never
            interrupted (skipping took about 3 s per million cached 32x32 images on a
            busy 2-core CPU). Images read from the source every epoch would have to be
            decoded to be skipped, so for them the order is reseeded with `start_batch`
            instead: reproducible, but not the uninterrupted order.

    Returns:
        A repeating `tf.data.Dataset` of float32 batches.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive; got {batch_size}.")
    if start_batch < 0:
        raise ValueError(f"start_batch must be 0 or positive; got {start_batch}.")
    source = _load_source(dataset, data_dir, split, image_size, crop_size, antialias)
    images = source.images
    cached = cache and _fits_in_memory(source)
    if cached:
        images = images.cache()
    skip_to_start = seed is not None and cached
    if seed is not None and not skip_to_start:
        seed += start_batch
    images = images.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True).repeat()
    if skip_to_start:
        images = images.skip(start_batch * batch_size)
    # Batches straddle epochs, so drop_remainder only fixes the static batch dimension.
    batches = images.batch(batch_size, drop_remainder=True)
    # Scaling whole batches costs one op per batch instead of one per image.
    batches = batches.map(_to_unit_range, num_parallel_calls=tf.data.AUTOTUNE)
    return batches.prefetch(tf.data.AUTOTUNE)


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
    """
    size = "native" if image_size is None else str(image_size)
    if crop_size is not None:
        size = f"crop{crop_size}-{size}"
    if not antialias:
        size += "-aliased"
    if dataset in _TFDS_SPECS or data_dir is None:
        return f"{dataset}-{size}"
    path = Path(data_dir).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"--data-dir {data_dir} does not exist.")
    return f"{dataset}-{path.name}-{_path_key(path)}-{size}"


def _load_source(
    dataset: str, data_dir: str | None, split: str, image_size: int | None,
    crop_size: int | None = None, antialias: bool = True,
) -> _Source:
    if dataset not in DATASETS:
        raise ValueError(f"Unknown dataset {dataset!r}; expected one of: {', '.join(DATASETS)}.")
    if image_size is not None and image_size < 1:
        raise ValueError(f"image_size must be positive or None; got {image_size}.")
    if crop_size is not None and crop_size < 1:
        raise ValueError(f"crop_size must be positive or None; got {crop_size}.")
    if dataset in _TFDS_SPECS:
        return _tfds_source(dataset, data_dir, split, image_size, crop_size, antialias)
    if data_dir is None:
        what = "a folder or .tar.gz of images" if dataset == "folder" else "a .npz or .npy file"
        raise ValueError(f"--dataset {dataset} needs --data-dir: {what}.")
    if dataset == "folder":
        return _folder_source(Path(data_dir).expanduser(), split, image_size, crop_size,
                              antialias)
    return _array_source(Path(data_dir).expanduser(), split, image_size, crop_size, antialias)


def _to_unit_range(images: tf.Tensor) -> tf.Tensor:
    # 255 / 127.5 - 1 is exactly 1 in float32, so uint8 input lands exactly in [-1, 1].
    return tf.cast(images, tf.float32) / 127.5 - 1.0


def _fits_in_memory(source: _Source) -> bool:
    if source.num_images is None:
        return False
    return source.num_images * source.size * source.size * 3 <= MEMORY_CACHE_LIMIT_BYTES


def _decode_image(contents: tf.Tensor) -> tf.Tensor:
    """Decodes JPEG, PNG, BMP, GIF or WebP bytes to uint8 RGB of shape (H, W, 3)."""

    def decode_jpeg() -> tf.Tensor:
        # TF's default JPEG decoder takes integer shortcuts that differ from PIL (and so
        # from PIL-based reference pipelines) by up to 4 levels; the accurate one matches.
        return tf.io.decode_jpeg(contents, channels=3, dct_method="INTEGER_ACCURATE")

    def decode_other() -> tf.Tensor:
        return tf.io.decode_image(contents, channels=3, expand_animations=False)

    image = tf.cond(tf.io.is_jpeg(contents), decode_jpeg, decode_other)
    return tf.ensure_shape(image, (None, None, 3))


def _to_square(
    images: tf.data.Dataset, size: int, crop_size: int | None = None, resize: bool = True,
    antialias: bool = True,
) -> tf.data.Dataset:
    """Centre-crops uint8 images to a square and resizes them to `size` x `size`.

    Args:
        images: uint8 images of shape (H, W, 3).
        size: output side.
        crop_size: side of the centred square to crop; None crops the largest one.
        resize: False when the crop is already `size` x `size`.
        antialias: antialiased or plain bilinear resizing.
    """

    def square(image: tf.Tensor) -> tf.Tensor:
        if crop_size is not None:
            tf.debugging.assert_greater_equal(
                tf.reduce_min(tf.shape(image)[:2]), crop_size,
                message=f"An image is smaller than the crop size {crop_size}; give a smaller "
                "crop_size (--crop-size), or none to crop the largest centred square.")
        image = _centre_crop(image, crop_size)
        if resize:
            image = _resize(image, size, antialias)
        return tf.ensure_shape(image, (size, size, 3))

    return images.map(square, num_parallel_calls=tf.data.AUTOTUNE)


def _centre_crop(image: tf.Tensor, side: int | None) -> tf.Tensor:
    height, width = tf.shape(image)[0], tf.shape(image)[1]
    if side is None:
        side = tf.minimum(height, width)
    return tf.image.crop_to_bounding_box(
        image, (height - side) // 2, (width - side) // 2, side, side
    )


def _resize(image: tf.Tensor, size: int, antialias: bool = True) -> tf.Tensor:
    resized = tf.image.resize(image, (size, size), method="bilinear", antialias=antialias)
    return tf.saturate_cast(tf.round(resized), tf.uint8)


# TFDS datasets.


def _tfds_source(
    name: str, data_dir: str | None, split: str, image_size: int | None,
    crop_size: int | None, antialias: bool,
) -> _Source:
    spec = _TFDS_SPECS[name]
    crop_size = crop_size or spec.crop_size
    builder = tfds.builder(name, data_dir=data_dir)
    if not builder.is_prepared():
        _download_and_prepare(builder, data_dir, spec)
    examples = builder.as_dataset(
        split=spec.splits.get(split, split),
        shuffle_files=False,
        # Decoded here instead, to decode JPEGs as PIL does (see `_decode_image`).
        decoders={"image": tfds.decode.SkipDecoding()},
    )
    num_images = int(examples.cardinality())
    size = image_size or spec.image_size
    native_height, native_width, _ = builder.info.features["image"].shape
    already_sized = crop_size is None and native_height == native_width == size
    images = examples.map(
        lambda example: _decode_image(example["image"]), num_parallel_calls=tf.data.AUTOTUNE
    )
    return _Source(
        images=_to_square(images, size, crop_size, resize=not already_sized,
                          antialias=antialias),
        size=size,
        num_images=num_images if num_images >= 0 else None,
    )


def _download_and_prepare(
    builder: tfds.core.DatasetBuilder, data_dir: str | None, spec: _TfdsSpec
) -> None:
    # TFDS looks for manually downloaded archives (ImageNet's) in data_dir/downloads/manual
    # by default; the command line promises data_dir itself.
    download_config = tfds.download.DownloadConfig(manual_dir=data_dir)
    try:
        builder.download_and_prepare(download_config=download_config)
    except Exception as error:  # Network, manual-download and disk errors all end here.
        raise RuntimeError(
            f"TFDS could not download and prepare {builder.name!r} in "
            f"{data_dir or 'its default data folder'} ({type(error).__name__}: {error}). "
            f"{spec.fix}"
        ) from error


# Folders of image files.


def _folder_source(
    data_dir: Path, split: str, image_size: int | None, crop_size: int | None,
    antialias: bool,
) -> _Source:
    root = _split_folder(_image_folder(data_dir), split)
    paths = _image_files(root)
    images = _decode_files(paths)
    size = image_size or crop_size
    if size is None:
        height, width = _image_shape(paths[0])
        images = images.map(lambda path, image: _checked_shape(path, image, (height, width, 3)))
        size = min(height, width)
    else:
        images = images.map(lambda path, image: image)
    return _Source(
        images=_to_square(images, size, crop_size, resize=image_size is not None,
                          antialias=antialias),
        size=size,
        num_images=len(paths),
    )


def _image_folder(data_dir: Path) -> Path:
    if not data_dir.exists():
        raise FileNotFoundError(f"Data path {data_dir} does not exist.")
    if data_dir.is_dir():
        return data_dir
    if not data_dir.name.lower().endswith(_ARCHIVE_SUFFIXES):
        raise ValueError(
            f"--dataset folder expects a folder of images or a .tar.gz/.tgz of one; got "
            f"{data_dir}. For a .npz/.npy array use --dataset npz."
        )
    return _extract_once(data_dir)


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
        raise ValueError(f"No image files ({', '.join(_IMAGE_EXTENSIONS)}) found in {root}.")
    return [path for _, path in sorted(keyed_paths)]


def _decode_files(paths: list[str]) -> tf.data.Dataset:
    """Decodes image files to uint8 RGB, in order, as (path, image) pairs.

    Grayscale images become RGB; an alpha channel is dropped (transparent pixels keep their
    stored colour); animated GIFs give their first frame. A file that cannot be read or
    decoded stops iteration with an error naming it.
    """
    num_files = len(paths)
    all_paths = tf.constant(paths)

    def decode(index: tf.Tensor, path: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        return index, path, _decode_image(tf.io.read_file(path))

    def check_none_missing(expected: tf.Tensor, element: tuple) -> tuple:
        index, path, image = element
        missing = tf.gather(all_paths, tf.minimum(expected, num_files - 1))
        message = tf.strings.format(
            "Could not read or decode image file {} (missing, corrupt or truncated?)", missing
        )
        assertion = tf.debugging.Assert(tf.equal(index, expected), [message])
        with tf.control_dependencies([assertion]):
            return index + 1, (tf.identity(index), path, image)

    # Decode errors raised inside tf.data do not say which file failed. Instead failures are
    # dropped, and a gap in the running index names the file; the end marker catches a
    # failure of the last file. Order must be deterministic for the index to line up.
    decoded = (
        tf.data.Dataset.from_tensor_slices(all_paths)
        .enumerate()
        .map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        .ignore_errors()
    )
    end_marker = tf.data.Dataset.from_tensors(
        (tf.constant(num_files, tf.int64), tf.constant(""), tf.zeros((0, 0, 3), tf.uint8))
    )
    checked = decoded.concatenate(end_marker).scan(tf.constant(0, tf.int64), check_none_missing)
    return checked.filter(lambda index, path, image: index < num_files).map(
        lambda index, path, image: (path, image)
    )


def _image_shape(path: str) -> tuple[int, int]:
    try:
        image = _decode_image(tf.io.read_file(path))
    except tf.errors.OpError as error:
        raise ValueError(f"Could not read or decode image file {path}: {error.message}") from error
    return int(image.shape[0]), int(image.shape[1])


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


# Archives of image folders.


def _extract_once(archive: Path) -> Path:
    """Extracts `archive` into the cache, unless an earlier call already did; returns the folder.

    Extraction goes to a temporary folder beside the cache entry, renamed into place when
    complete, so an interrupted extraction never leaves a half-filled entry behind.
    """
    target = _cache_folder() / f"{_archive_stem(archive)}-{_path_key(archive)}"
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f"{target.name}.partial-", dir=target.parent))
    try:
        _extract_archive(archive, staging)
        try:
            os.replace(staging, target)
        except OSError:
            # Another process (e.g. another worker) finished the same extraction first.
            if not target.is_dir():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _cache_folder() -> Path:
    root = os.environ.get(_CACHE_ENV) or Path.home() / ".cache" / "keras_bssn"
    return Path(root).expanduser() / "datasets"


def _archive_stem(archive: Path) -> str:
    name = archive.name
    suffix = next(suffix for suffix in _ARCHIVE_SUFFIXES if name.lower().endswith(suffix))
    return name[: -len(suffix)]


def _path_key(path: Path) -> str:
    # A changed or replaced file gets a new cache entry instead of a stale one.
    stat = path.stat()
    identity = f"{path.resolve()}\0{stat.st_size}\0{stat.st_mtime_ns}"
    return hashlib.sha256(identity.encode()).hexdigest()[:12]


def _extract_archive(archive: Path, destination: Path) -> None:
    """Writes the archive's regular files and folders under `destination`.

    Links and special files are skipped. Much faster than `TarFile.extractall` for many
    small files (CIFAR-10's 60,000), which also restores owners and modes not needed here.
    """
    made_folders = {destination}
    try:
        with tarfile.open(archive, "r|*") as tar:
            for member in tar:
                if not (member.isfile() or member.isdir()):
                    continue
                path = destination / _safe_member_path(archive, member.name)
                folder = path if member.isdir() else path.parent
                if folder not in made_folders:
                    folder.mkdir(parents=True, exist_ok=True)
                    made_folders.add(folder)
                if member.isfile():
                    with tar.extractfile(member) as source, open(path, "wb") as copy:
                        shutil.copyfileobj(source, copy)
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as error:
        raise ValueError(f"Could not read archive {archive}: {error}") from error


def _safe_member_path(archive: Path, name: str) -> PurePosixPath:
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts:
        raise ValueError(f"Archive {archive} has a member outside its folder: {name!r}.")
    return path


# NumPy arrays.


def _array_source(
    path: Path, split: str, image_size: int | None, crop_size: int | None, antialias: bool,
) -> _Source:
    array = _read_array(path, split)
    images = _as_uint8(_with_three_channels(array, path), path)
    size = image_size or crop_size or min(images.shape[1:3])
    dataset = tf.data.Dataset.from_tensor_slices(images)
    return _Source(
        images=_to_square(dataset, size, crop_size, resize=image_size is not None,
                          antialias=antialias),
        size=size,
        num_images=len(images),
    )


def _read_array(path: Path, split: str) -> np.ndarray:
    if not path.exists():
        raise FileNotFoundError(f"Data path {path} does not exist.")
    if path.suffix.lower() not in (".npz", ".npy"):
        raise ValueError(
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
        raise ValueError(f"Could not read {path} as a NumPy array file: {error}") from error


def _array_key(keys: list[str], path: Path, split: str) -> str:
    # x_train/x_test is the layout of Keras's own .npz datasets (mnist.npz).
    for key in (f"x_{split}", *_ARRAY_KEYS):
        if key in keys:
            return key
    if len(keys) == 1:
        return keys[0]
    raise ValueError(
        f"{path} holds arrays {sorted(keys)}; expected images under one of "
        f"{['x_' + split, *_ARRAY_KEYS]} or a single array."
    )


def _with_three_channels(array: np.ndarray, path: Path) -> np.ndarray:
    """Returns (N, H, W, 3) images; grayscale (N, H, W) or (N, H, W, 1) is repeated to RGB.

    Two- and four-channel arrays are refused rather than guessed at: unlike an RGBA image
    file, an array does not say whether its fourth channel is alpha.
    """
    if array.ndim == 3 and array.shape[-1] == 3:
        raise ValueError(
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
    raise ValueError(f"{path} holds an array of shape {array.shape}: {fix}.")


def _as_uint8(images: np.ndarray, path: Path) -> np.ndarray:
    """Accepts uint8 images, or float images in [-1, 1] (quantised to uint8 like the rest).

    A float array with no negative value is refused: it is far more likely [0, 1] images
    than [-1, 1] images without a single dark pixel.
    """
    if len(images) == 0:
        raise ValueError(f"{path} holds no images.")
    if images.dtype == np.uint8:
        return images
    if not np.issubdtype(images.dtype, np.floating):
        raise ValueError(
            f"{path} holds {images.dtype} images; expected uint8 in [0, 255] or float in "
            "[-1, 1]. If the values are 0..255, convert with x.astype(np.uint8)."
        )
    low, high = float(np.min(images)), float(np.max(images))
    if not (-1.0 <= low < 0.0 and high <= 1.0):
        raise ValueError(
            f"{path} holds {images.dtype} images in [{low:g}, {high:g}]; float images must be "
            "in [-1, 1]. Scale [0, 1] images with x * 2 - 1, or store 0..255 as uint8."
        )
    return np.round((images + 1.0) * 127.5).astype(np.uint8)
