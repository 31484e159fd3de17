"""What every source shares: the `Source` it returns, decoding, squaring, scaling to [-1, 1]."""

from __future__ import annotations

import dataclasses

import tensorflow as tf

from training.errors import DataError


@dataclasses.dataclass(frozen=True)
class Source:
    """uint8 images of shape (size, size, 3), and how many there are (None when unknown)."""

    images: tf.data.Dataset
    size: int
    num_images: int | None


def to_unit_range(images: tf.Tensor) -> tf.Tensor:
    """Scales uint8 images (or batches of them) to float32 in [-1, 1]."""
    # 255 / 127.5 - 1 is exactly 1 in float32, so uint8 input lands exactly in [-1, 1].
    return tf.cast(images, tf.float32) / 127.5 - 1.0


def decode_image(contents: tf.Tensor) -> tf.Tensor:
    """Decodes JPEG, PNG, BMP, GIF or WebP bytes to uint8 RGB of shape (H, W, 3).

    Args:
        contents: a scalar string tensor, the bytes of one image file.

    Returns:
        The decoded image; decoding fails with `tf.errors.InvalidArgumentError` for bytes
        that are empty, truncated or not in one of these formats.
    """

    def decode_jpeg() -> tf.Tensor:
        # TF's default JPEG decoder takes integer shortcuts that differ from PIL (and so
        # from PIL-based reference pipelines) by up to 4 levels; the accurate one matches.
        return tf.io.decode_jpeg(contents, channels=3, dct_method="INTEGER_ACCURATE")

    def decode_other() -> tf.Tensor:
        return tf.io.decode_image(contents, channels=3, expand_animations=False)

    image = tf.cond(tf.io.is_jpeg(contents), decode_jpeg, decode_other)
    return tf.ensure_shape(image, (None, None, 3))


def check_crop_size(crop_size: int | None, height: int | None, width: int | None,
                    images: str) -> None:
    """Refuses, before any image is read, a crop larger than images of this size.

    Args:
        crop_size: the side asked for; None crops the largest square, which always fits.
        height, width: the images' size; None where unknown (not checked).
        images: which images, for the message (e.g. "the images in data/x.npz").

    Raises:
        DataError: the crop does not fit.
    """
    sides = [side for side in (height, width) if side is not None]
    if crop_size is not None and sides and crop_size > min(sides):
        size = "x".join("?" if side is None else str(side) for side in (height, width))
        raise DataError(f"--crop-size {crop_size} is larger than {images} ({size} pixels); "
                        f"give at most {min(sides)}, or no --crop-size to cut the largest "
                        "centred square.")


def to_square(
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

    Returns:
        The dataset of uint8 images of shape (size, size, 3).
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
