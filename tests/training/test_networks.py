"""The reference networks: shapes, normalization of every D layer, initializers."""

import keras
import numpy as np
import pytest

from keras_bssn import BidirectionalSpectralNormalization, SpectralNormalization
from training.networks import build_networks
from training.networks.cnn import cnn_discriminator, cnn_generator

# (kernel shape, strides) of the reference CIFAR discriminator, in order (paper.md).
CIFAR_D_KERNELS = [((3, 3, 3, 64), 1), ((4, 4, 64, 64), 2), ((3, 3, 64, 128), 1),
                   ((4, 4, 128, 128), 2), ((3, 3, 128, 256), 1), ((4, 4, 256, 256), 2),
                   ((3, 3, 256, 512), 1)]


@pytest.mark.parametrize("image_size, base", [(32, 4), (48, 6), (64, 8)])
def test_cnn_generator_shapes(image_size, base):
    generator = cnn_generator(image_size, latent_dim=128)
    assert generator.layers[1].units == base * base * 512
    images = keras.ops.convert_to_numpy(generator(np.random.randn(2, 128).astype("float32")))
    assert images.shape == (2, image_size, image_size, 3)
    assert images.min() >= -1 and images.max() <= 1
    kernels = [layer.kernel.shape for layer in generator.layers
               if isinstance(layer, keras.layers.Conv2DTranspose)]
    assert kernels == [(4, 4, 256, 512), (4, 4, 128, 256), (4, 4, 64, 128), (3, 3, 3, 64)]
    assert all(layer.synchronized for layer in generator.layers
               if isinstance(layer, keras.layers.BatchNormalization))


def test_cnn_discriminator_matches_the_reference_and_normalizes_every_layer():
    discriminator = cnn_discriminator(32, norm="bssn", scale=1.3)
    wrapped = [layer for layer in discriminator.layers
               if isinstance(layer, (SpectralNormalization, BidirectionalSpectralNormalization))]
    convs = [layer.layer for layer in wrapped if isinstance(layer.layer, keras.layers.Conv2D)]
    assert [(tuple(conv.kernel.shape), conv.strides[0]) for conv in convs] == CIFAR_D_KERNELS
    assert len(wrapped) == 8 and all(layer.scale == 1.3 for layer in wrapped)
    assert isinstance(wrapped[-1].layer, keras.layers.Dense)
    leaky = [layer for layer in discriminator.layers if isinstance(layer, keras.layers.LeakyReLU)]
    assert len(leaky) == 7 and all(abs(layer.negative_slope - 0.1) < 1e-7 for layer in leaky)
    assert discriminator.output_shape == (None, 1)
    stddevs = [np.std(keras.ops.convert_to_numpy(conv.kernel)) for conv in convs[3:]]
    np.testing.assert_allclose(stddevs, 0.02 * 0.88, rtol=0.05)  # truncated normal, 2 sigma


def test_unnormalized_discriminator_has_plain_layers():
    discriminator = cnn_discriminator(32, norm="none")
    assert not any(isinstance(layer, (SpectralNormalization, BidirectionalSpectralNormalization))
                   for layer in discriminator.layers)


@pytest.mark.parametrize("arch, size", [("resnet", 32), ("cnn", 8)])
def test_build_networks_round_trip(arch, size):
    generator, discriminator = build_networks(arch, size, latent_dim=16, norm="sn")
    images = generator(np.random.randn(3, 16).astype("float32"))
    assert tuple(images.shape) == (3, size, size, 3)
    assert tuple(discriminator(images, training=True).shape) == (3, 1)


def test_resnet_discriminator_sums_pools_and_serializes(tmp_path):
    _, discriminator = build_networks("resnet", 32, norm="bssn", scale=1.2)
    path = tmp_path / "d.keras"
    discriminator.save(path)
    restored = keras.saving.load_model(path)
    x = np.random.default_rng(0).standard_normal((2, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(discriminator(x)),
                               keras.ops.convert_to_numpy(restored(x)), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kwargs, message", [
    ({"arch": "vit"}, "Unknown architecture"),
    ({"norm": "weightnorm"}, "Unknown normalization"),
    ({"norm": "none", "scale": 2.0}, "norm='none'"),
    ({"image_size": 30}, "divisible by 8"),
])
def test_bad_settings_are_refused(kwargs, message):
    settings = {"arch": "cnn", "image_size": 32, **kwargs}
    with pytest.raises(ValueError, match=message):
        build_networks(settings.pop("arch"), settings.pop("image_size"), **settings)


def _initializer_of(layer):
    inner = getattr(layer, "layer", layer)
    return type(inner.kernel_initializer).__name__


@pytest.mark.parametrize("initializers, generator_init, dense_init", [
    ("official", "RandomNormal", "RandomNormal"),
    ("truncated", "TruncatedNormal", "TruncatedNormal")])
def test_cnn_initializers_follow_the_official_code(initializers, generator_init, dense_init):
    generator = cnn_generator(32, initializers=initializers)
    discriminator = cnn_discriminator(32, norm="bssn", initializers=initializers)
    generator_layers = [layer for layer in generator.layers
                        if isinstance(layer, (keras.layers.Dense, keras.layers.Conv2DTranspose))]
    assert len(generator_layers) == 5
    assert {_initializer_of(layer) for layer in generator_layers} == {generator_init}
    d_layers = [layer for layer in discriminator.layers if hasattr(layer, "layer")]
    assert {_initializer_of(layer) for layer in d_layers[:-1]} == {"TruncatedNormal"}
    assert _initializer_of(d_layers[-1]) == dense_init
    for layer in generator_layers + d_layers:
        inner = getattr(layer, "layer", layer)
        assert inner.kernel_initializer.stddev == 0.02


@pytest.mark.parametrize("arch, initializers", [("cnn", "official"), ("cnn", "truncated"),
                                                ("resnet", "official")])
def test_every_layer_draws_its_own_random_weights(arch, initializers):
    # An initializer instance shared by layers repeats one random stream in each of them: the
    # first values of every kernel would be the same numbers.
    options = {"initializers": initializers} if arch == "cnn" else {}
    generator, discriminator = build_networks(arch, 32, norm="bssn", scale=1.2, **options)
    kernels = {weight.path: np.ravel(keras.ops.convert_to_numpy(weight))
               for model in (generator, discriminator) for weight in model.weights
               if weight.path.endswith("kernel") or "/u_view" in weight.path}
    names = sorted(kernels)
    for index, first in enumerate(names):
        for second in names[index + 1:]:
            count = min(kernels[first].size, kernels[second].size)
            if count < 64:
                continue
            correlation = np.corrcoef(kernels[first][:count], kernels[second][:count])[0, 1]
            assert abs(correlation) < 0.5, (first, second, correlation)


def test_generator_batchnorm_uses_the_official_momentum_and_epsilon():
    for generator in (cnn_generator(32), build_networks("resnet", 32)[0]):
        norms = [layer for layer in generator.layers
                 if isinstance(layer, keras.layers.BatchNormalization)]
        assert norms and all((norm.momentum, norm.epsilon) == (0.9, 1e-5) for norm in norms)
    legacy = cnn_generator(32, bn_momentum=0.99, bn_epsilon=1e-3)
    assert {(layer.momentum, layer.epsilon) for layer in legacy.layers
            if isinstance(layer, keras.layers.BatchNormalization)} == {(0.99, 1e-3)}


def test_imagenet_resnet_discriminator_has_a_normalized_1x1_shortcut_in_every_later_block():
    _, discriminator = build_networks("resnet", 128, norm="bssn", scale=1.2)
    wrapped = {layer.name: tuple(layer.layer.kernel.shape) for layer in discriminator.layers
               if isinstance(layer, BidirectionalSpectralNormalization)
               or isinstance(layer, SpectralNormalization)}
    channels = [3, 64, 128, 256, 512, 1024, 1024]
    expected = {}
    for block in range(1, 7):
        c_in, c_out = channels[block - 1], channels[block]
        expected[f"dblock{block}_conv1"] = (3, 3, c_in, c_out)
        expected[f"dblock{block}_conv2"] = (3, 3, c_out, c_out)
        expected[f"dblock{block}_shortcut"] = (1, 1, c_in, c_out)
    expected["logits"] = (1024, 1)
    assert wrapped == expected  # 19 normalized layers, the last block's 1024 -> 1024 included
    assert all(layer.scale == 1.2 for layer in discriminator.layers if hasattr(layer, "scale"))


def test_resnet_generator_output_convolution_has_glorot_gain_one():
    generator, _ = build_networks("resnet", 32)
    to_rgb = generator.get_layer("to_rgb")
    assert to_rgb.kernel_initializer.scale == 1.0
    assert generator.get_layer("gblock1_conv1").kernel_initializer.scale == 2.0
