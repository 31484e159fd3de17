"""BSSN in an existing Keras GAN: the keras.io DCGAN, its discriminator converted with one call.

keras.io's "DCGAN to generate face images" with the hinge loss, and one line more:
`keras_bssn.spectral_normalize(discriminator, method="bssn", scale=1.2)` wraps D's Conv2D and
Dense layers in `BidirectionalSpectralNormalization`. Run from the repository root
(`--data-dir`: a folder of images, searched recursively, or a .tar.gz archive of one):

```
python -m examples.dcgan_with_bssn --data-dir ../shared/data/celeba-aligned-sample.tar.gz \
    --steps 200 --batch-size 32 --image-size 64 --out dcgan_samples.png
```
"""

import argparse
import os
import tarfile
import tempfile

os.environ["KERAS_BACKEND"] = "tensorflow"  # the train_step uses tf.GradientTape

import keras
import numpy as np
import tensorflow as tf
from keras import layers, ops

import keras_bssn

LATENT_DIM = 128


def build_discriminator(image_size: int) -> keras.Model:
    discriminator = keras.Sequential([keras.Input((image_size, image_size, 3))],
                                     name="discriminator")
    for index, filters in enumerate((64, 128, 128)):
        discriminator.add(layers.Conv2D(filters, 4, strides=2, padding="same",
                                        name=f"conv{index + 1}"))
        discriminator.add(layers.LeakyReLU(0.2))
    discriminator.add(layers.Flatten())
    discriminator.add(layers.Dense(1, name="logits"))
    return discriminator


def build_generator(image_size: int) -> keras.Model:
    base = image_size // 8
    generator = keras.Sequential([keras.Input((LATENT_DIM,)), layers.Dense(base * base * 128),
                                  layers.Reshape((base, base, 128))], name="generator")
    for filters in (128, 256, 512):
        generator.add(layers.Conv2DTranspose(filters, 4, strides=2, padding="same"))
        generator.add(layers.LeakyReLU(0.2))
    generator.add(layers.Conv2D(3, 5, padding="same", activation="tanh"))
    return generator


class DCGAN(keras.Model):
    """keras.io's GAN model: one discriminator update, then one generator update, per step."""

    def __init__(self, discriminator: keras.Model, generator: keras.Model):
        super().__init__()
        self.discriminator = discriminator
        self.generator = generator
        self.seed_generator = keras.random.SeedGenerator(1337)

    def compile(self, d_optimizer: keras.optimizers.Optimizer,
                g_optimizer: keras.optimizers.Optimizer) -> None:
        super().compile()
        self.d_optimizer = d_optimizer
        self.g_optimizer = g_optimizer

    def train_step(self, real_images) -> dict:
        batch_size = ops.shape(real_images)[0]
        latents = keras.random.normal((batch_size, LATENT_DIM), seed=self.seed_generator)
        fake_images = self.generator(latents, training=True)
        with tf.GradientTape() as tape:
            # training=True: the wrappers run a power iteration and store the advanced vectors
            # (vector_updates="in_call"); called without it, they would never advance.
            logits = self.discriminator(ops.concatenate([real_images, fake_images], axis=0),
                                        training=True)
            real_logits, fake_logits = ops.split(logits, 2, axis=0)
            d_loss = ops.mean(ops.relu(1 - real_logits)) + ops.mean(ops.relu(1 + fake_logits))
        grads = tape.gradient(d_loss, self.discriminator.trainable_weights)
        self.d_optimizer.apply_gradients(zip(grads, self.discriminator.trainable_weights))

        with tf.GradientTape() as tape:
            # training=False: normalized by sigma from the stored vectors, not advanced again.
            fake_logits = self.discriminator(self.generator(latents, training=True),
                                             training=False)
            g_loss = -ops.mean(fake_logits)
        grads = tape.gradient(g_loss, self.generator.trainable_weights)
        self.g_optimizer.apply_gradients(zip(grads, self.generator.trainable_weights))
        return {"d_loss": d_loss, "g_loss": g_loss}


def save_grid(images: np.ndarray, path: str, side: int = 4) -> None:
    """Writes the first side x side images (in [-1, 1]) as one PNG grid."""
    _, height, width, channels = images.shape
    grid = images[: side * side].reshape(side, side, height, width, channels).swapaxes(1, 2)
    grid = grid.reshape(side * height, side * width, channels)
    keras.utils.save_img(path, np.round((grid + 1) * 127.5), scale=False)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m examples.dcgan_with_bssn")
    parser.add_argument("--data-dir", default="../shared/data/celeba-aligned-sample.tar.gz")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--image-size", type=int, default=64, help="a multiple of 8")
    parser.add_argument("--out", default="dcgan_samples.png")
    args = parser.parse_args()
    if not os.path.exists(args.data_dir):
        parser.error(f"--data-dir {args.data_dir}: no such folder or archive")
    if args.image_size % 8:
        parser.error(f"--image-size {args.image_size}: give a multiple of 8, e.g. 32 or 64")

    discriminator = keras_bssn.spectral_normalize(build_discriminator(args.image_size),
                                                  method="bssn", scale=1.2)
    gan = DCGAN(discriminator, build_generator(args.image_size))
    gan.compile(d_optimizer=keras.optimizers.Adam(1e-4, beta_1=0.5),
                g_optimizer=keras.optimizers.Adam(1e-4, beta_1=0.5))

    def print_losses(batch: int, logs: dict) -> None:
        if batch % 10 == 0 or batch + 1 == args.steps:
            print(f"step {batch + 1}: d_loss {logs['d_loss']:.4f}, g_loss {logs['g_loss']:.4f}")

    with tempfile.TemporaryDirectory() as scratch:
        folder = args.data_dir
        if os.path.isfile(folder):  # a .tar.gz archive of images: extract it first
            with tarfile.open(folder) as archive:
                archive.extractall(scratch, filter="data")
            folder = scratch
        dataset = keras.utils.image_dataset_from_directory(
            folder, labels=None, batch_size=args.batch_size,
            image_size=(args.image_size, args.image_size), crop_to_aspect_ratio=True)
        dataset = dataset.map(lambda images: images / 127.5 - 1).repeat()
        gan.fit(dataset, steps_per_epoch=args.steps, epochs=1, verbose=0,
                callbacks=[keras.callbacks.LambdaCallback(on_train_batch_end=print_losses)])

    for name, sigma in keras_bssn.collect_sigmas(discriminator).items():
        print(f"{name}: {float(sigma):.4f}")
    latents = keras.random.normal((16, LATENT_DIM), seed=0)
    save_grid(ops.convert_to_numpy(gan.generator(latents, training=False)), args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
