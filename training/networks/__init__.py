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
                   scale: float = 1.0, power_iterations: int = 1,
                   channels: int = 3) -> tuple[keras.Model, keras.Model]:
    """(generator, discriminator) of architecture `arch` ("cnn" or "resnet")."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"Unknown architecture {arch!r}; choose one of "
                         f"{', '.join(ARCHITECTURES)}.")
    make_generator, make_discriminator = ARCHITECTURES[arch]
    generator = make_generator(image_size=image_size, latent_dim=latent_dim, channels=channels)
    discriminator = make_discriminator(image_size=image_size, channels=channels, norm=norm,
                                       scale=scale, power_iterations=power_iterations)
    return generator, discriminator
