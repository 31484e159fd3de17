"""Strict SN: the convolution operator's norm, checked against explicit matrices and diagnostics.

Backend-neutral (keras.ops and NumPy only), like the other library tests.
"""

import copy
import math

import keras
import numpy as np
import pytest
from keras import ops

from keras_bssn import (
    SpectralNormalization,
    StrictSpectralNormalization,
    diagnostics,
    spectral_normalize,
)
from tests.keras_bssn.autodiff import gradient

# (layer factory, input spatial grid, input channels)
CONVOLUTIONS = {
    "conv2d-3x3-same": (lambda: keras.layers.Conv2D(3, 3, padding="same", use_bias=False),
                        (6, 6), 2),
    "conv2d-4x4-stride2-same": (lambda: keras.layers.Conv2D(3, 4, strides=2, padding="same",
                                                            use_bias=False), (6, 6), 2),
    "conv1d-3-stride2-valid": (lambda: keras.layers.Conv1D(4, 3, strides=2, use_bias=False),
                               (9,), 3),
    "conv1d-causal-dilated": (lambda: keras.layers.Conv1D(2, 2, padding="causal",
                                                          dilation_rate=2, use_bias=False),
                              (7,), 2),
    "conv3d-2-same": (lambda: keras.layers.Conv3D(2, 2, padding="same", use_bias=False),
                      (3, 3, 3), 2),
}


def _input(grid, channels, batch=2, seed=0):
    return np.random.default_rng(seed).standard_normal((batch, *grid, channels)).astype(
        "float32")


def _built(factory, grid, channels, **kwargs):
    wrapper = StrictSpectralNormalization(factory(), **kwargs)
    wrapper(_input(grid, channels))
    return wrapper


def _numpy(tensor):
    return np.asarray(ops.convert_to_numpy(tensor), np.float64)


def _operator_matrix(wrapper):
    """The layer's own (bias-free) convolution as a matrix: its outputs on every basis input."""
    shape = tuple(wrapper.u_input.shape[1:])
    size = math.prod(shape)
    basis = np.eye(size, dtype="float32").reshape((size, *shape))
    return _numpy(wrapper.layer(basis)).reshape(size, -1).T


def _kernel(wrapper):
    return _numpy(wrapper.layer.kernel.value)


@pytest.mark.parametrize("name", CONVOLUTIONS)
def test_converged_sigma_is_the_operator_norm(name):
    factory, grid, channels = CONVOLUTIONS[name]
    wrapper = _built(factory, grid, channels, power_iterations=300)
    wrapper(_input(grid, channels), training=True)
    estimate = float(wrapper.sigma_estimates()[0])

    exact = np.linalg.norm(_operator_matrix(wrapper), 2)
    np.testing.assert_allclose(estimate, exact, rtol=1e-3)
    layer = wrapper.layer
    reference = diagnostics.conv_operator_norm(
        _kernel(wrapper), grid, strides=layer.strides, padding=layer.padding,
        power_iterations=2000, tol=1e-10) if layer.padding != "causal" else exact
    np.testing.assert_allclose(estimate, reference, rtol=1e-3)


def test_strict_sigma_exceeds_the_fan_in_view_sigma():
    wrapper = _built(lambda: keras.layers.Conv2D(16, 3, padding="same"), (8, 8), 8,
                     power_iterations=100)
    wrapper(_input((8, 8), 8), training=True)
    view1, _ = diagnostics.spectral_norm_of_views(_kernel(wrapper))
    assert float(wrapper.sigma_estimates()[0]) > 1.3 * view1


def test_training_call_advances_the_vector_exactly_power_iterations_times():
    factory, grid, channels = CONVOLUTIONS["conv2d-4x4-stride2-same"]
    wrapper = _built(factory, grid, channels, power_iterations=3)
    matrix = _operator_matrix(wrapper)
    u = _numpy(wrapper.u_input.value).reshape(-1)
    expected = []
    for _ in range(4):
        u = matrix.T @ (matrix @ u)
        u /= np.linalg.norm(u)
        expected.append(u)
    wrapper(_input(grid, channels), training=True)
    advanced = _numpy(wrapper.u_input.value).reshape(-1)
    np.testing.assert_allclose(advanced, expected[2], rtol=1e-4, atol=1e-6)
    assert not np.allclose(advanced, expected[1], atol=1e-4)
    assert not np.allclose(advanced, expected[3], atol=1e-4)


def test_inference_uses_the_stored_vector_without_moving_it():
    factory, grid, channels = CONVOLUTIONS["conv2d-3x3-same"]
    wrapper = _built(factory, grid, channels)
    x = _input(grid, channels, seed=1)
    before = _numpy(wrapper.u_input.value)
    outputs = _numpy(wrapper(x, training=False))
    np.testing.assert_array_equal(_numpy(wrapper.u_input.value), before)

    u = before.reshape(-1) / np.linalg.norm(before)
    sigma = np.linalg.norm(_operator_matrix(wrapper) @ u)
    plain = _numpy(wrapper.layer(x))
    np.testing.assert_allclose(outputs, plain / sigma, rtol=1e-4, atol=1e-6)


def test_gradient_flows_through_sigma_with_the_vector_constant():
    factory, grid, channels = CONVOLUTIONS["conv2d-4x4-stride2-same"]
    wrapper = _built(factory, grid, channels, scale=1.3)
    x = _input(grid, channels, seed=2)
    layer = wrapper.layer
    u = ops.convert_to_tensor(_numpy(wrapper.u_input.value).astype("float32"))
    u = u / ops.sqrt(ops.sum(ops.square(u)))
    weights = ops.convert_to_tensor(
        np.random.default_rng(3).standard_normal(_numpy(wrapper(x)).shape).astype("float32"))

    def reference_loss(kernel):
        sigma = ops.sqrt(ops.sum(ops.square(ops.conv(u, kernel, strides=2, padding="same"))))
        outputs = ops.conv(x, 1.3 * kernel / sigma, strides=2, padding="same")
        return ops.sum(outputs * weights)

    def wrapper_loss(kernel):
        with keras.StatelessScope(state_mapping=[(layer.kernel, kernel)]):
            return ops.sum(wrapper(x, training=False) * weights)

    kernel = layer.kernel.value
    np.testing.assert_allclose(gradient(wrapper_loss, kernel), gradient(reference_loss, kernel),
                               rtol=1e-4, atol=1e-6)


def test_dense_layer_is_plain_sn():
    x = _input((), 5)
    strict = StrictSpectralNormalization(keras.layers.Dense(4), scale=1.2)
    plain = SpectralNormalization(keras.layers.Dense(4), scale=1.2)
    strict(x)
    plain(x)
    plain.set_weights(strict.get_weights())
    for training in (True, False, True):
        np.testing.assert_allclose(_numpy(strict(x, training=training)),
                                   _numpy(plain(x, training=training)), rtol=1e-6)
    np.testing.assert_allclose(_numpy(strict.vectors[0].value), _numpy(plain.vectors[0].value))
    assert [vector.name for vector in strict.vectors] == ["u_view1"]
    strict.advance_vectors()
    plain.advance_vectors()
    np.testing.assert_allclose(_numpy(strict.vectors[0].value), _numpy(plain.vectors[0].value))


def test_spatial_shape_fixes_the_operator_of_an_unsized_input():
    layer = keras.layers.Conv2D(3, 3, padding="same")
    with pytest.raises(ValueError, match="spatial_shape"):
        StrictSpectralNormalization(layer).build((None, None, None, 2))
    wrapper = StrictSpectralNormalization(keras.layers.Conv2D(3, 3, padding="same"),
                                          spatial_shape=(5, 7))
    outputs = wrapper(_input((10, 4), 2), training=True)
    assert tuple(wrapper.u_input.shape) == (1, 5, 7, 2)
    assert tuple(outputs.shape) == (2, 10, 4, 3)


@pytest.mark.parametrize("layer", [keras.layers.Conv2DTranspose(2, 3),
                                   keras.layers.DepthwiseConv2D(3),
                                   keras.layers.Conv2D(4, 3, groups=2)])
def test_other_convolutions_are_refused(layer):
    with pytest.raises(ValueError, match="StrictSpectralNormalization"):
        StrictSpectralNormalization(layer)


def test_config_round_trip():
    wrapper = StrictSpectralNormalization(keras.layers.Conv2D(4, 3), scale=1.4,
                                          power_iterations=2, eps=1e-8, spatial_shape=(9, 9),
                                          name="strict")
    clone = StrictSpectralNormalization.from_config(wrapper.get_config())
    assert (clone.scale, clone.power_iterations, clone.eps, clone.spatial_shape, clone.name) == (
        1.4, 2, 1e-8, (9, 9), "strict")
    assert isinstance(clone.layer, keras.layers.Conv2D) and clone.layer.kernel_size == (3, 3)


def test_keras_file_round_trip_reproduces_outputs_and_vector(tmp_path):
    inputs = keras.Input((8, 8, 3))
    hidden = StrictSpectralNormalization(keras.layers.Conv2D(4, 4, strides=2, padding="same"),
                                         scale=1.3)(inputs)
    outputs = StrictSpectralNormalization(keras.layers.Dense(1))(keras.layers.Flatten()(hidden))
    model = keras.Model(inputs, outputs)
    x = _input((8, 8), 3, batch=4)
    for _ in range(3):
        model(x, training=True)
    path = tmp_path / "model.keras"
    model.save(path)
    restored = keras.saving.load_model(path)
    np.testing.assert_array_equal(_numpy(model(x)), _numpy(restored(x)))
    assert len(restored.non_trainable_weights) == 2  # u_input of the conv, u_view1 of the dense
    for original, loaded in zip(model.non_trainable_weights, restored.non_trainable_weights):
        np.testing.assert_array_equal(_numpy(original.value), _numpy(loaded.value))


def test_spectral_normalize_accepts_method_strict():
    inputs = keras.Input((8, 8, 3))
    hidden = keras.layers.Conv2D(4, 3, name="conv")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(1, name="logits")(
        keras.layers.Flatten()(hidden)))
    converted = spectral_normalize(model, method="strict", scale=1.1)
    wrappers = [layer for layer in converted.layers
                if isinstance(layer, StrictSpectralNormalization)]
    assert [layer.name for layer in wrappers] == ["conv", "logits"]
    assert tuple(wrappers[0].u_input.shape) == (1, 8, 8, 3)


@pytest.mark.parametrize("name", CONVOLUTIONS)
def test_advance_vectors_runs_the_operator_power_iteration(name):
    factory, grid, channels = CONVOLUTIONS[name]
    wrapper = _built(factory, grid, channels, power_iterations=2)
    matrix = _operator_matrix(wrapper)
    start = _numpy(wrapper.u_input.value)
    expected = start.reshape(-1)
    for _ in range(2):
        expected = matrix.T @ (matrix @ expected)
        expected /= np.linalg.norm(expected)
    wrapper.advance_vectors()
    advanced = _numpy(wrapper.u_input.value)
    np.testing.assert_allclose(advanced.reshape(-1), expected, rtol=1e-4, atol=1e-6)
    # The same vector a training call stores from the same start.
    wrapper.u_input.assign(start.astype("float32"))
    wrapper(_input(grid, channels), training=True)
    np.testing.assert_allclose(_numpy(wrapper.u_input.value), advanced, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("option, value", [("differentiable_power_iteration", True),
                                           ("vector_updates", "explicit"),
                                           ("vector_updates", "per_step")])
def test_the_other_wrappers_options_are_refused_by_name(option, value):
    message = f"StrictSpectralNormalization has no `{option}` option \\(got {value!r}\\)"
    with pytest.raises(ValueError, match=message):
        StrictSpectralNormalization(keras.layers.Conv2D(4, 3), **{option: value})
    model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3)])
    with pytest.raises(ValueError, match=message):
        spectral_normalize(model, method="strict", **{option: value})


def test_config_holds_only_its_own_options_and_reads_a_0_2_config():
    wrapper = StrictSpectralNormalization(keras.layers.Conv2D(4, 3), scale=1.4)
    config = wrapper.get_config()
    assert "differentiable_power_iteration" not in config and "vector_updates" not in config
    # from_config takes the inner layer's config out of the dict it is given.
    clone = StrictSpectralNormalization.from_config(copy.deepcopy(config))
    assert clone.get_config() == config
    # keras-bssn 0.2 saved the other wrappers' options, at the values strict SN has.
    saved = {**copy.deepcopy(config), "differentiable_power_iteration": False,
             "vector_updates": "in_call"}
    assert StrictSpectralNormalization.from_config(saved).get_config() == config
