"""The project's `GAN` model on your own image folder, fed by your own `tf.data` pipeline.

`training.networks.build_networks` gives the paper's CNN generator and BSSN discriminator;
`training.gan.GAN` trains them with `fit`. Each batch given to `fit` holds `n_dis`
discriminator batches (`n_dis * batch_size` images in [-1, 1]), one per discriminator update.
Run from the repository root (the `training` package lives in the checkout), e.g. on the
CelebA sample:

```
mkdir -p /tmp/faces && tar -xzf ../shared/data/celeba-aligned-sample.tar.gz -C /tmp/faces
python -m examples.gan_on_image_folder --data-dir /tmp/faces --steps 200 --image-size 32 \
    --out gan_samples.png
```
"""

import argparse
import os

os.environ["KERAS_BACKEND"] = "tensorflow"  # the training system runs on TensorFlow

import keras
import tensorflow as tf

from training.gan import GAN
from training.images import save_grid_png
from training.networks import build_networks


# What keras.utils.image_dataset_from_directory reads.
IMAGE_SUFFIXES = (".bmp", ".gif", ".jpeg", ".jpg", ".png")


def real_images(data_dir: str, image_size: int, fit_batch_size: int) -> tf.data.Dataset:
    """Endless batches of `fit_batch_size` images from `data_dir`, scaled to [-1, 1]."""
    # Unbatched and shuffled (the file list, each pass); batched here, at the size fit needs.
    images = keras.utils.image_dataset_from_directory(
        data_dir, labels=None, batch_size=None, image_size=(image_size, image_size),
        crop_to_aspect_ratio=True)
    return (images.map(lambda image: image / 127.5 - 1).repeat()
            .batch(fit_batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE))


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m examples.gan_on_image_folder")
    parser.add_argument("--data-dir", required=True,
                        help="a folder of images (searched recursively)")
    parser.add_argument("--steps", type=int, default=1000, help="generator updates")
    parser.add_argument("--image-size", type=int, default=32, help="a multiple of 8: 32, 48, 64")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--n-dis", type=int, default=1,
                        help="discriminator updates per generator update")
    parser.add_argument("--out", default="gan_samples.png", help="the sample grid (PNG)")
    args = parser.parse_args()
    if not os.path.isdir(args.data_dir):
        parser.error(f"--data-dir {args.data_dir}: no such folder")
    if not any(name.lower().endswith(IMAGE_SUFFIXES)
               for _, _, names in os.walk(args.data_dir) for name in names):
        parser.error(f"--data-dir {args.data_dir}: no {', '.join(IMAGE_SUFFIXES)} images in it "
                     "or its subfolders")
    if args.image_size % 8:
        parser.error(f"--image-size {args.image_size}: the CNN needs a multiple of 8")

    generator, discriminator = build_networks("cnn", args.image_size, norm="bssn", scale=1.2)
    gan = GAN(generator, discriminator)
    gan.compile(d_optimizer=keras.optimizers.Adam(1e-4, beta_1=0.5, beta_2=0.999),
                g_optimizer=keras.optimizers.Adam(1e-4, beta_1=0.5, beta_2=0.999),
                loss="hinge", n_dis=args.n_dis)
    dataset = real_images(args.data_dir, args.image_size, args.n_dis * args.batch_size)

    def print_logs(batch: int, logs: dict) -> None:
        # Besides the losses, the logs hold D's mean logits, its input gradients' norms and
        # the sigma estimates of each normalized layer (`sigma/<layer>`).
        if batch % 10 == 0 or batch + 1 == args.steps:
            sigmas = [value for name, value in logs.items() if name.startswith("sigma/")]
            print(f"step {batch + 1}: d_loss {logs['d_loss']:.4f}, g_loss {logs['g_loss']:.4f}, "
                  f"sigmas {min(sigmas):.3f} to {max(sigmas):.3f}")

    gan.fit(dataset, steps_per_epoch=args.steps, epochs=1, verbose=0,
            callbacks=[keras.callbacks.LambdaCallback(on_train_batch_end=print_logs)])

    latents = keras.random.normal((64, gan.latent_dim), seed=0)
    images = keras.ops.convert_to_numpy(gan.generator(latents, training=False))
    save_grid_png(((images + 1) * 127.5).round().clip(0, 255).astype("uint8"), args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
