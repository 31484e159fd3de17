"""The SNGAN ResNets: the 32x32 CIFAR variant and the 128x128 ImageNet one (unconditional).

Residual blocks as in Miyato et al. (2018): G blocks are BN-ReLU-upsample-conv3x3-BN-ReLU-conv3x3
with a 1x1 upsampled shortcut; D blocks are ReLU-conv3x3-ReLU-conv3x3(-avgpool) with a
normalized 1x1 shortcut convolution in every block but the first (as the official BSN code
has it, even where channels and resolution do not change); D ends with ReLU, a global sum
pooling and Dense(1). Initializers follow the reference: Glorot uniform with a sqrt(2) gain
(variance scale 2) for 3x3 convolutions and gain 1 for shortcuts, dense layers and G's output
convolution. G BatchNorm: momentum 0.9, epsilon 1e-5 (the official code's).
"""

from __future__ import annotations

import keras
from keras import ops

from training.networks.normalization import check_normalization, normalized
from training.serialization import register_serializable

# (base resolution, base channels, generator block channels, discriminator blocks as
#  (channels, downsample))
_CONFIGS = {
    32: (4, 256, (256, 256, 256), ((128, True), (128, True), (128, False), (128, False))),
    128: (4, 1024, (1024, 512, 256, 128, 64),
          ((64, True), (128, True), (256, True), (512, True), (1024, True), (1024, False))),
}


@register_serializable
class GlobalSumPooling2D(keras.layers.Layer):
    """Sums over the spatial axes (SNGAN's D pools by summing, not averaging)."""

    def call(self, inputs):
        return ops.sum(inputs, axis=(1, 2))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[-1])


SUPPORTED_SIZES = tuple(_CONFIGS)


def _config(image_size: int):
    if image_size not in _CONFIGS:
        raise ValueError(f"The SNGAN ResNet exists for image sizes {sorted(_CONFIGS)}; got "
                         f"{image_size}.")
    return _CONFIGS[image_size]


def _glorot(gain_squared: float) -> keras.initializers.Initializer:
    return keras.initializers.VarianceScaling(gain_squared, mode="fan_avg",
                                              distribution="uniform")


def _conv(filters: int, kernel_size: int, name: str, gain_squared: float | None = None
          ) -> keras.layers.Conv2D:
    if gain_squared is None:
        gain_squared = 2.0 if kernel_size == 3 else 1.0
    return keras.layers.Conv2D(filters, kernel_size, padding="same",
                               kernel_initializer=_glorot(gain_squared), name=name)


def _generator_block(x, filters: int, name: str, batch_norm):
    h = batch_norm(f"{name}_bn1")(x)
    h = keras.layers.ReLU()(h)
    h = keras.layers.UpSampling2D(2)(h)
    h = _conv(filters, 3, f"{name}_conv1")(h)
    h = batch_norm(f"{name}_bn2")(h)
    h = keras.layers.ReLU()(h)
    h = _conv(filters, 3, f"{name}_conv2")(h)
    shortcut = _conv(filters, 1, f"{name}_shortcut")(keras.layers.UpSampling2D(2)(x))
    return keras.layers.Add()([h, shortcut])


def resnet_generator(image_size: int = 32, latent_dim: int = 128, channels: int = 3,
                     bn_momentum: float = 0.9, bn_epsilon: float = 1e-5,
                     name: str = "generator") -> keras.Model:
    """The SNGAN ResNet generator (32x32 CIFAR variant or 128x128 ImageNet).

    Args:
        image_size: 32 or 128.
        latent_dim: size of z.
        channels: output channels.
        bn_momentum: BatchNorm moving-average momentum (official 0.9).
        bn_epsilon: BatchNorm epsilon (official 1e-5).
        name: model name.
    """

    def batch_norm(layer_name=None):
        return keras.layers.BatchNormalization(momentum=bn_momentum, epsilon=bn_epsilon,
                                               synchronized=True, name=layer_name)

    base, base_channels, block_channels, _ = _config(image_size)
    latents = keras.Input((latent_dim,), name="latents")
    x = keras.layers.Dense(base * base * base_channels, kernel_initializer=_glorot(1.0))(latents)
    x = keras.layers.Reshape((base, base, base_channels))(x)
    for index, filters in enumerate(block_channels):
        x = _generator_block(x, filters, f"gblock{index + 1}", batch_norm)
    x = batch_norm()(x)
    x = keras.layers.ReLU()(x)
    x = _conv(channels, 3, "to_rgb", gain_squared=1.0)(x)
    images = keras.layers.Activation("tanh", dtype="float32", name="images")(x)
    return keras.Model(latents, images, name=name)


def _discriminator_block(x, filters: int, downsample: bool, first: bool, name: str, wrap):
    # The first block sees images, so it starts with a conv rather than a ReLU, and pools its
    # input before the shortcut conv ("optimized block").
    h = x if first else keras.layers.ReLU()(x)
    h = wrap(_conv(filters, 3, f"{name}_conv1"))(h)
    h = keras.layers.ReLU()(h)
    h = wrap(_conv(filters, 3, f"{name}_conv2"))(h)
    if downsample:
        h = keras.layers.AveragePooling2D(2)(h)
    if first:
        shortcut = wrap(_conv(filters, 1, f"{name}_shortcut"))(keras.layers.AveragePooling2D(2)(x))
    else:
        shortcut = wrap(_conv(filters, 1, f"{name}_shortcut"))(x)
        if downsample:
            shortcut = keras.layers.AveragePooling2D(2)(shortcut)
    return keras.layers.Add()([h, shortcut])


def resnet_discriminator(image_size: int = 32, channels: int = 3, norm: str = "bssn",
                         scale: float = 1.0, power_iterations: int = 1,
                         name: str = "discriminator", **wrapper_options) -> keras.Model:
    """The SNGAN ResNet discriminator with every conv and the dense layer normalized.

    Args:
        image_size: 32 or 128.
        channels: input channels.
        norm: "none", "sn", "ssn", "bsn" or "bssn".
        scale: the constant c of SSN/BSSN.
        power_iterations: power-iteration steps per discriminator update.
        name: model name.
        **wrapper_options: `differentiable_power_iteration` and `vector_updates` of the
            normalization wrappers.
    """
    check_normalization(norm, scale)
    *_, blocks = _config(image_size)

    def wrap(layer):
        return normalized(layer, norm, scale, power_iterations, **wrapper_options)

    images = keras.Input((image_size, image_size, channels), name="images")
    x = images
    for index, (filters, downsample) in enumerate(blocks):
        x = _discriminator_block(x, filters, downsample, index == 0, f"dblock{index + 1}", wrap)
    x = keras.layers.ReLU()(x)
    x = GlobalSumPooling2D(name="global_sum_pool")(x)
    logits = wrap(keras.layers.Dense(1, kernel_initializer=_glorot(1.0), name="logits"))(x)
    logits = keras.layers.Activation("linear", dtype="float32", name="logits_float32")(logits)
    return keras.Model(images, logits, name=name)
