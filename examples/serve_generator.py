"""Serving an exported generator with TensorFlow alone: no Keras model, keras_bssn or training.

An export (`training.export.export_generator`, `python -m training.train` writes one when it
finishes) is a plain SavedModel with two signatures: `generate` (`num`, `seed` -> `images`, uint8
pixels; the same seed gives the same images) and `serving_default` (`latents` -> `images`,
float32 in [-1, 1]). This script calls both, prints what they return and writes the seeded
images as a PNG grid. Run from the repository root:

```
python -m examples.serve_generator --model saved_models/cifar10-cnn-bssn --num 16 --seed 0 \
    --out served.png
```
"""

import argparse
import json
import math
import os

import numpy as np
import tensorflow as tf


def save_grid(pixels: tf.Tensor, path: str) -> None:
    """Writes uint8 images (num, H, W, C) as one PNG, ceil(sqrt(num)) images a row."""
    num, height, width, channels = pixels.shape
    cols = math.ceil(math.sqrt(num))
    rows = math.ceil(num / cols)
    padded = tf.concat([pixels, tf.zeros([rows * cols - num, height, width, channels],
                                         tf.uint8)], axis=0)
    grid = tf.transpose(tf.reshape(padded, [rows, cols, height, width, channels]),
                        [0, 2, 1, 3, 4])
    grid = tf.reshape(grid, [rows * height, cols * width, channels])
    tf.io.write_file(path, tf.io.encode_png(grid))


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m examples.serve_generator")
    parser.add_argument("--model", default="saved_models/cifar10-cnn-bssn",
                        help="an exported generator (a SavedModel folder)")
    parser.add_argument("--num", type=int, default=16, help="images to generate")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="served.png", help="the PNG grid to write")
    args = parser.parse_args()
    if not os.path.isfile(os.path.join(args.model, "saved_model.pb")):
        parser.error(f"--model {args.model}: no SavedModel there (no saved_model.pb); export "
                     "a generator first, e.g. with python -m training.train")

    generator = tf.saved_model.load(args.model)
    metadata = json.loads(generator.metadata_json.numpy())
    print("metadata:", {key: metadata[key] for key in ("latent_dim", "image_shape", "step")
                        if key in metadata})

    generate = generator.signatures["generate"]
    pixels = generate(num=tf.constant(args.num), seed=tf.constant(args.seed, tf.int64))["images"]
    print(f"generate: images {pixels.dtype.name} {pixels.shape.as_list()}, "
          f"range [{tf.reduce_min(pixels)}, {tf.reduce_max(pixels)}]")

    latents = np.random.default_rng(args.seed).standard_normal(
        (args.num, metadata["latent_dim"]), dtype=np.float32)
    images = generator.signatures["serving_default"](latents=tf.constant(latents))["images"]
    print(f"serving_default: images {images.dtype.name} {images.shape.as_list()}, "
          f"range [{tf.reduce_min(images):.3f}, {tf.reduce_max(images):.3f}]")

    save_grid(pixels, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
