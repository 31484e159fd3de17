"""The paper's reference generators and discriminators, by architecture name."""

from __future__ import annotations

import keras

from training.networks.cnn import cnn_discriminator, cnn_generator
from training.networks.resnet import resnet_discriminator, resnet_generator

ARCHITECTURES = {
    "cnn": (cnn_generator, cnn_discriminator),
    "resnet": (resnet_generator, resnet_discriminator),
}


def build_networks(arch: str, image_size: int, latent_dim: int = 128, norm: str = "bssn",
                   scale: float = 1.0, power_iterations: int = 1, channels: int = 3,
                   bn_momentum: float = 0.9, bn_epsilon: float = 1e-5,
                   initializers: str = "official", **wrapper_options
                   ) -> tuple[keras.Model, keras.Model]:
    """(generator, discriminator) of architecture `arch` ("cnn" or "resnet").

    `initializers` applies to the CNN only (the ResNet has the official Glorot initializers);
    `wrapper_options` (`differentiable_power_iteration`, `vector_updates`) go to D's wrappers.
    """
    if arch not in ARCHITECTURES:
        raise ValueError(f"Unknown architecture {arch!r}; choose one of "
                         f"{', '.join(ARCHITECTURES)}.")
    make_generator, make_discriminator = ARCHITECTURES[arch]
    cnn_only = {"initializers": initializers} if arch == "cnn" else {}
    generator = make_generator(image_size=image_size, latent_dim=latent_dim, channels=channels,
                               bn_momentum=bn_momentum, bn_epsilon=bn_epsilon, **cnn_only)
    discriminator = make_discriminator(image_size=image_size, channels=channels, norm=norm,
                                       scale=scale, power_iterations=power_iterations,
                                       **cnn_only, **wrapper_options)
    return generator, discriminator
