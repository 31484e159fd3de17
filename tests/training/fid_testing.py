"""Tiny stand-ins shared by the FID tests: a generator, a feature model, random images."""

import keras
import numpy as np

LATENT_DIM = 8
IMAGE_SIZE = 8
FEATURE_DIM = 6
CLASSES = 5


def random_images(num: int, size: int = IMAGE_SIZE, seed: int = 0) -> np.ndarray:
    """Float32 images in [-1, 1], `(num, size, size, 3)`."""
    rng = np.random.default_rng(seed)
    return rng.uniform(-1.0, 1.0, (num, size, size, 3)).astype(np.float32)


def tiny_generator(name: str = "generator") -> keras.Model:
    """Latents `(B, LATENT_DIM)` -> images `(B, IMAGE_SIZE, IMAGE_SIZE, 3)` in [-1, 1]."""
    return keras.Sequential(
        [
            keras.Input((LATENT_DIM,)),
            keras.layers.Dense(IMAGE_SIZE * IMAGE_SIZE * 3),
            keras.layers.Reshape((IMAGE_SIZE, IMAGE_SIZE, 3)),
            keras.layers.Activation("tanh"),
        ],
        name=name,
    )


def tiny_feature_model(input_size: int = IMAGE_SIZE) -> keras.Model:
    """Images `(B, input_size, input_size, 3)` -> `[features, logits]`, `(B, FEATURE_DIM)` and
    `(B, CLASSES)`."""
    images = keras.Input((input_size, input_size, 3))
    hidden = keras.layers.Conv2D(8, 3, activation="relu")(images)
    features = keras.layers.Dense(FEATURE_DIM, activation="tanh")(
        keras.layers.GlobalAveragePooling2D()(hidden)
    )
    logits = keras.layers.Dense(CLASSES)(features)
    return keras.Model(images, [features, logits], name="tiny_features")
