"""What callers iterate: images in a fixed order, and endless shuffled training batches."""

from __future__ import annotations

from pathlib import Path

import tensorflow as tf

from training.data.preprocessing import Source, to_unit_range
from training.data.sources import load_source

# Above this many bytes of uint8 images, `cache=True` reads from the source every epoch
# instead: ImageNet at 128x128 (63 GB) does not fit in memory, CelebA at 64x64 (2 GB) does.
MEMORY_CACHE_LIMIT_BYTES = 4 * 2**30


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
            there is one, else all of it. Files that cannot be decoded are skipped with a
            warning on stderr. For `npz`, a `.npz` or `.npy` file (uint8, or float in
            [-1, 1]) with the images under `x_<split>`, `x`, `images`, `arr_0` or as its
            only array.
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
    source = load_source(dataset, data_dir, split, image_size, crop_size, antialias)
    return source.images.map(to_unit_range, num_parallel_calls=tf.data.AUTOTUNE)


# The shuffle buffer of data too large to cache in memory (and of runs before 0.3).
DEFAULT_SHUFFLE_BUFFER = 10_000


def make_train_dataset(
    dataset: str,
    data_dir: str | None,
    batch_size: int,
    image_size: int | None = None,
    split: str = "train",
    seed: int | None = None,
    shuffle_buffer: int | None = None,
    cache: bool = True,
    start_batch: int = 0,
    crop_size: int | None = None,
    antialias: bool = True,
    skipped_log: Path | None = None,
) -> tf.data.Dataset:
    """Endless shuffled batches of float32 images in [-1, 1], shaped (batch_size, S, S, 3).

    Args:
        dataset, data_dir, split, image_size, crop_size, antialias: as for `load_images`.
        batch_size: the global batch size; `strategy.experimental_distribute_dataset`
            splits each batch between replicas.
        seed: shuffle seed (combined with TensorFlow's global seed, as tf.data does); the
            order changes every epoch but repeats run to run. None shuffles differently
            each run.
        shuffle_buffer: number of images the shuffle draws from. None: all of them where
            they are cached in memory (each pass is a uniform random permutation of the data
            set), else `DEFAULT_SHUFFLE_BUFFER` (a local shuffle of the source's order).
        cache: keep decoded images in memory after the first epoch, so that decoding runs
            once, unless they would take more than `MEMORY_CACHE_LIMIT_BYTES`.
        start_batch: batches a resumed run has already trained on. With a seed and cached
            images the stream continues exactly where it stopped, as if never
            interrupted (skipping took about 3 s per million cached 32x32 images on a
            busy 2-core CPU). Images read from the source every epoch would have to be
            decoded to be skipped, so for them the order is reseeded with `start_batch`
            instead: reproducible, but not the uninterrupted order.
        skipped_log: a file to which the warnings about unreadable images of a `folder`
            data set are appended too (each file skipped, and the count of each pass).

    Returns:
        A repeating `tf.data.Dataset` of float32 batches.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive; got {batch_size}.")
    if start_batch < 0:
        raise ValueError(f"start_batch must be 0 or positive; got {start_batch}.")
    source = load_source(dataset, data_dir, split, image_size, crop_size, antialias,
                         skipped_log)
    images = source.images
    cached = cache and _fits_in_memory(source)
    if cached:
        images = images.cache()
    if shuffle_buffer is None:
        shuffle_buffer = source.num_images if cached else DEFAULT_SHUFFLE_BUFFER
    skip_to_start = seed is not None and cached
    if seed is not None and not skip_to_start:
        seed += start_batch
    images = images.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True).repeat()
    if skip_to_start:
        images = images.skip(start_batch * batch_size)
    # Batches straddle epochs, so drop_remainder only fixes the static batch dimension.
    batches = images.batch(batch_size, drop_remainder=True)
    # Scaling whole batches costs one op per batch instead of one per image.
    batches = batches.map(to_unit_range, num_parallel_calls=tf.data.AUTOTUNE)
    return batches.prefetch(tf.data.AUTOTUNE)


def _fits_in_memory(source: Source) -> bool:
    if source.num_images is None:
        return False
    return source.num_images * source.size * source.size * 3 <= MEMORY_CACHE_LIMIT_BYTES
