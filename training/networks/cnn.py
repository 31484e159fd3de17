"""The standard CNN of SNGAN and of the BSN reference code (CIFAR10, STL10, CelebA).

G: z -> Dense(mg*mg*512) -> BN -> ReLU -> (mg, mg, 512) -> 3x [ConvTranspose 4x4/2 + BN + ReLU]
(256, 128, 64) -> ConvTranspose 3x3/1 to 3 -> tanh.
D: conv 3x3/1 64, 4x4/2 64, 3x3/1 128, 4x4/2 128, 3x3/1 256, 4x4/2 256, 3x3/1 512, each followed
by LeakyReLU(0.1), then Dense(1). mg = image_size / 8 (4, 6, 8 for 32, 48, 64 pixels).

Initializers as in the official code: D convolutions truncated normal (stddev 0.02); G dense,
G transposed convolutions and the D dense layer plain normal (stddev 0.02); biases zero.
`initializers="truncated"` truncates all of them (this project's releases before 0.2). G
BatchNorm as in the official code by default: momentum 0.9, epsilon 1e-5.
"""

from __future__ import annotations

import keras

from training.networks.normalization import check_normalization, normalized

_DISCRIMINATOR_CONVS = [(3, 1, 64), (4, 2, 64), (3, 1, 128), (4, 2, 128), (3, 1, 256),
                        (4, 2, 256), (3, 1, 512)]


INITIALIZERS = ("official", "truncated")


def _initializer(initializers: str, truncated_in_official: bool
                 ) -> keras.initializers.Initializer:
    # A new instance per layer: an unseeded Keras 3 initializer fixes its seed when it is
    # created, so one instance shared by several layers gives them all the same random stream
    # (each kernel a prefix of the same draws), where the official code draws each anew.
    if initializers not in INITIALIZERS:
        raise ValueError(f"Unknown initializers {initializers!r}; choose one of "
                         f"{', '.join(INITIALIZERS)}.")
    if initializers == "truncated" or truncated_in_official:
        return keras.initializers.TruncatedNormal(stddev=0.02)
    return keras.initializers.RandomNormal(stddev=0.02)


def _base_size(image_size: int) -> int:
    if image_size % 8:
        raise ValueError(f"The CNN needs an image size divisible by 8 (32, 48, 64); got "
                         f"{image_size}.")
    return image_size // 8


def cnn_generator(image_size: int = 32, latent_dim: int = 128, channels: int = 3,
                  bn_momentum: float = 0.9, bn_epsilon: float = 1e-5,
                  initializers: str = "official", name: str = "generator") -> keras.Model:
    """The reference CNN generator; BatchNorm is synchronized across replicas.

    Args:
        image_size: 32, 48 or 64 (any multiple of 8).
        latent_dim: size of z.
        channels: output channels.
        bn_momentum: BatchNorm moving-average momentum (official 0.9; Keras default 0.99).
        bn_epsilon: BatchNorm epsilon (official 1e-5; Keras default 1e-3).
        initializers: "official" (plain normal) or "truncated" (truncated normal).
        name: model name.

    Example:

    >>> generator = cnn_generator(32)
    >>> generator(np.zeros((2, 128))).shape
    TensorShape([2, 32, 32, 3])
    """
    base = _base_size(image_size)
    latents = keras.Input((latent_dim,), name="latents")

    def batch_norm():
        return keras.layers.BatchNormalization(momentum=bn_momentum, epsilon=bn_epsilon,
                                               synchronized=True)

    def init():
        return _initializer(initializers, truncated_in_official=False)

    x = keras.layers.Dense(base * base * 512, kernel_initializer=init())(latents)
    x = batch_norm()(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.Reshape((base, base, 512))(x)
    for filters in (256, 128, 64):
        x = keras.layers.Conv2DTranspose(filters, 4, strides=2, padding="same",
                                         kernel_initializer=init())(x)
        x = batch_norm()(x)
        x = keras.layers.ReLU()(x)
    x = keras.layers.Conv2DTranspose(channels, 3, strides=1, padding="same",
                                     kernel_initializer=init())(x)
    images = keras.layers.Activation("tanh", dtype="float32", name="images")(x)
    return keras.Model(latents, images, name=name)


def cnn_discriminator(image_size: int = 32, channels: int = 3, norm: str = "bssn",
                      scale: float = 1.0, power_iterations: int = 1,
                      initializers: str = "official", name: str = "discriminator",
                      **wrapper_options) -> keras.Model:
    """The reference CNN discriminator with every conv and the dense layer normalized.

    Args:
        image_size: 32, 48 or 64 (any multiple of 8).
        channels: input channels.
        norm: "none", "sn", "ssn", "bsn" or "bssn".
        scale: the constant c of SSN/BSSN.
        power_iterations: power-iteration steps per discriminator update.
        initializers: "official" (truncated normal convs, plain normal dense) or
            "truncated" (all truncated).
        name: model name.
        **wrapper_options: `differentiable_power_iteration` and `vector_updates` of the
            normalization wrappers.

    Example:

    >>> discriminator = cnn_discriminator(32, norm="bssn", scale=1.2)
    >>> discriminator(np.zeros((2, 32, 32, 3))).shape
    TensorShape([2, 1])
    """
    _base_size(image_size)
    check_normalization(norm, scale)
    images = keras.Input((image_size, image_size, channels), name="images")
    x = images
    for index, (kernel_size, strides, filters) in enumerate(_DISCRIMINATOR_CONVS):
        conv = keras.layers.Conv2D(filters, kernel_size, strides=strides, padding="same",
                                   kernel_initializer=_initializer(initializers, True),
                                   name=f"conv{index + 1}")
        x = normalized(conv, norm, scale, power_iterations, **wrapper_options)(x)
        x = keras.layers.LeakyReLU(0.1)(x)
    x = keras.layers.Flatten()(x)
    dense = keras.layers.Dense(1, kernel_initializer=_initializer(initializers, False),
                               name="logits")
    logits = normalized(dense, norm, scale, power_iterations, **wrapper_options)(x)
    logits = keras.layers.Activation("linear", dtype="float32", name="logits_float32")(logits)
    return keras.Model(images, logits, name=name)
