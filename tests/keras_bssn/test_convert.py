"""spectral_normalize: wrapping existing models, and collect_sigmas."""

import keras
import numpy as np
import pytest
from keras import ops

from keras_bssn import (
    BidirectionalSpectralNormalization,
    SpectralNormalization,
    collect_sigmas,
    spectral_normalize,
)


def _functional_model() -> keras.Model:
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, name="conv")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.Flatten()(x)
    outputs = keras.layers.Dense(1, name="logits")(x)
    return keras.Model(inputs, outputs)


def test_wraps_supported_layers_and_keeps_weights():
    model = _functional_model()
    converted = spectral_normalize(model, method="bssn", scale=1.2)
    assert isinstance(converted.get_layer("conv"), BidirectionalSpectralNormalization)
    assert isinstance(converted.get_layer("logits"), BidirectionalSpectralNormalization)
    assert isinstance(converted.get_layer("bn"), keras.layers.BatchNormalization)
    for name in ("conv", "logits"):
        for original, copied in zip(model.get_layer(name).get_weights(),
                                    converted.get_layer(name).layer.get_weights()):
            np.testing.assert_array_equal(original, copied)
    assert converted.get_layer("conv").scale == 1.2
    x = np.random.default_rng(0).standard_normal((2, 8, 8, 3)).astype("float32")
    assert not np.allclose(ops.convert_to_numpy(model(x)), ops.convert_to_numpy(converted(x)))


def test_layer_filter_and_sn_method():
    converted = spectral_normalize(_functional_model(), method="sn",
                                   layer_filter=lambda layer: layer.name != "logits")
    assert type(converted.get_layer("conv")) is SpectralNormalization
    assert isinstance(converted.get_layer("logits"), keras.layers.Dense)


def test_nested_sequential_is_converted():
    inner = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="inner_dense")],
                             name="inner")
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(1, name="head")(inner(inputs)))
    converted = spectral_normalize(model, method="sn")
    assert isinstance(converted.get_layer("inner").get_layer("inner_dense"),
                      SpectralNormalization)
    np.testing.assert_array_equal(
        model.get_layer("inner").get_layer("inner_dense").get_weights()[0],
        converted.get_layer("inner").get_layer("inner_dense").layer.get_weights()[0])


def test_subclassed_model_gets_a_clear_error():
    class Discriminator(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(1)

        def call(self, x):
            return self.dense(x)

    model = Discriminator()
    model(np.zeros((1, 3)))
    with pytest.raises(ValueError, match="subclassed model.*Wrap its layers by hand"):
        spectral_normalize(model)


def test_unknown_method_is_refused():
    with pytest.raises(ValueError, match="Unknown normalization method 'strict-ish'"):
        spectral_normalize(_functional_model(), method="strict-ish")


def test_collect_sigmas_names_each_view_and_does_not_advance():
    converted = spectral_normalize(_functional_model(), method="bssn")
    before = [ops.convert_to_numpy(w.value) for w in converted.non_trainable_weights]
    sigmas = collect_sigmas(converted)
    assert set(sigmas) == {"sigma/conv_view1", "sigma/conv_view2", "sigma/logits"}
    assert all(float(value) > 0 for value in sigmas.values())
    for original, after in zip(before, converted.non_trainable_weights):
        np.testing.assert_array_equal(original, ops.convert_to_numpy(after.value))
