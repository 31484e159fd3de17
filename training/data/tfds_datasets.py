"""TFDS data sets by name: the paper's preprocessing, and what to do when TFDS cannot get them."""

from __future__ import annotations

import dataclasses

import tensorflow as tf
import tensorflow_datasets as tfds

from training.data.preprocessing import Source, check_crop_size, decode_image, to_square
from training.errors import DataUnavailableError


@dataclasses.dataclass(frozen=True)
class TfdsSpec:
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


TFDS_SPECS = {
    "cifar10": TfdsSpec(
        image_size=32,
        fix="Without internet access, use --dataset folder "
        "--data-dir ../shared/data/cifar10-jpeg.tar.gz (the same images as JPEG).",
    ),
    # "train" is unlabelled+train (105k images), as in common GAN code; the paper names only
    # the 100k unlabelled images, which split="unlabelled" gives.
    "stl10": TfdsSpec(
        image_size=48,
        splits={"train": "unlabelled+train"},
        fix="Without internet access, use --dataset folder --data-dir <folder or .tar.gz "
        "of STL-10 images> --image-size 48.",
    ),
    "celeb_a": TfdsSpec(
        image_size=64,
        crop_size=128,
        splits={"all": "train+validation+test"},  # the 202,599 images the official code uses
        fix="Without internet access (TFDS fetches CelebA from Google Drive, which often "
        "refuses), use --dataset folder --data-dir <img_align_celeba folder or .tar.gz> "
        "--image-size 64 --crop-size 128 (the paper's crop).",
    ),
    "imagenet2012": TfdsSpec(
        image_size=128,
        fix="ImageNet is never downloaded automatically: put ILSVRC2012_img_train.tar and "
        "ILSVRC2012_img_val.tar from image-net.org in --data-dir (read here as TFDS's "
        "manual download folder), or use --dataset folder --data-dir <folder of images>.",
    ),
}


def tfds_source(
    name: str, data_dir: str | None, split: str, image_size: int | None,
    crop_size: int | None, antialias: bool,
) -> Source:
    """Loads the TFDS data set `name`, downloading and preparing it first when needed.

    Args:
        name: a key of `TFDS_SPECS`.
        data_dir, split, image_size, crop_size, antialias: as for `load_images`.

    Returns:
        The data set's images, in TFDS's order.
    """
    spec = TFDS_SPECS[name]
    crop_size = crop_size or spec.crop_size
    builder = tfds.builder(name, data_dir=data_dir)
    if not builder.is_prepared():
        _download_and_prepare(builder, data_dir, spec)
    examples = builder.as_dataset(
        split=spec.splits.get(split, split),
        shuffle_files=False,
        # Decoded here instead, to decode JPEGs as PIL does (see `decode_image`).
        decoders={"image": tfds.decode.SkipDecoding()},
    )
    num_images = int(examples.cardinality())
    size = image_size or spec.image_size
    native_height, native_width, _ = builder.info.features["image"].shape
    check_crop_size(crop_size, native_height, native_width, images=f"the images of {name}")
    already_sized = crop_size is None and native_height == native_width == size
    images = examples.map(
        lambda example: decode_image(example["image"]), num_parallel_calls=tf.data.AUTOTUNE
    )
    return Source(
        images=to_square(images, size, crop_size, resize=not already_sized,
                         antialias=antialias),
        size=size,
        num_images=num_images if num_images >= 0 else None,
    )


def _download_and_prepare(
    builder: tfds.core.DatasetBuilder, data_dir: str | None, spec: TfdsSpec
) -> None:
    # TFDS looks for manually downloaded archives (ImageNet's) in data_dir/downloads/manual
    # by default; the command line promises data_dir itself.
    download_config = tfds.download.DownloadConfig(manual_dir=data_dir)
    try:
        builder.download_and_prepare(download_config=download_config)
    except Exception as error:  # Network, manual-download and disk errors all end here.
        raise DataUnavailableError(
            f"TFDS could not download and prepare {builder.name!r} in "
            f"{data_dir or 'its default data folder'} ({type(error).__name__}: {error}). "
            f"{spec.fix}"
        ) from error
