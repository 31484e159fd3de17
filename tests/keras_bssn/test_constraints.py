"""SN/BSN as Keras weight constraints: projections to spectral norm c."""

import keras
import numpy as np
import pytest
from keras import ops

from keras_bssn import spectral
from keras_bssn.constraints import BidirectionalSpectralNorm, SpectralNorm

tensorflow_only = pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                                     reason="constraints work under the TensorFlow backend only")


@pytest.mark.skipif(keras.backend.backend() == "tensorflow",
                    reason="checks the refusal on the other backends")
def test_other_backends_refuse_clearly_and_point_to_the_wrappers():
    model = keras.Sequential([keras.Input((4,)),
                              keras.layers.Dense(2, kernel_constraint=SpectralNorm())])
    model.compile(optimizer="sgd", loss="mse")
    with pytest.raises(NotImplementedError, match="Use the wrappers instead"):
        model.fit(np.ones((4, 4)), np.ones((4, 2)), verbose=0)


def _view_norms(kernel, transposed=False):
    rank = kernel.ndim
    spatial = tuple(range(rank - 2))
    ins, outs = ((rank - 1,), (rank - 2,)) if transposed else ((rank - 2,), (rank - 1,))
    layout = spectral.KernelLayout("kernel", spatial, ins, outs)
    return spectral.exact_view_norms(kernel, layout)


@tensorflow_only
@pytest.mark.parametrize("scale", [1.0, 1.5])
def test_spectral_norm_constraint_projects_to_scale_during_fit(scale):
    model = keras.Sequential([
        keras.Input((6, 6, 3)),
        keras.layers.Conv2D(8, 3, kernel_constraint=SpectralNorm(scale, power_iterations=30)),
        keras.layers.Flatten(),
        keras.layers.Dense(1, kernel_constraint=SpectralNorm(scale, power_iterations=30)),
    ])
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((16, 6, 6, 3)), rng.standard_normal((16, 1))
    model.fit(x, y, batch_size=16, epochs=3, verbose=0)
    for layer in (model.layers[0], model.layers[2]):
        kernel = ops.convert_to_numpy(layer.kernel)
        np.testing.assert_allclose(_view_norms(kernel)[0], scale, rtol=1e-3)


@tensorflow_only
def test_bidirectional_constraint_averages_the_two_views_to_scale():
    constraint = BidirectionalSpectralNorm(scale=1.4, power_iterations=50)
    kernel = keras.Variable(np.random.default_rng(1).standard_normal((3, 3, 4, 6)),
                            dtype="float32")
    projected = ops.convert_to_numpy(constraint(kernel))
    np.testing.assert_allclose(np.mean(_view_norms(projected)), 1.4, rtol=1e-3)


@tensorflow_only
def test_transposed_kernel_layout_is_honoured():
    kernel = keras.Variable(np.random.default_rng(2).standard_normal((4, 4, 5, 3)),
                            dtype="float32")
    projected = ops.convert_to_numpy(SpectralNorm(1.0, power_iterations=60,
                                                  transposed=True)(kernel))
    np.testing.assert_allclose(_view_norms(projected, transposed=True)[0], 1.0, rtol=1e-3)
    # The same kernel read as (in, out) is a different matrix with a different norm.
    assert abs(_view_norms(projected)[0] - 1.0) > 1e-2


@tensorflow_only
def test_vectors_persist_between_projections():
    constraint = SpectralNorm(power_iterations=1)
    kernel = keras.Variable(np.random.default_rng(3).standard_normal((20, 10)), dtype="float32")
    exact = np.linalg.norm(ops.convert_to_numpy(kernel), 2)
    for _ in range(60):
        projected = constraint(kernel)
    # One iteration per call only converges because u is carried over between calls.
    np.testing.assert_allclose(np.linalg.norm(ops.convert_to_numpy(projected), 2), 1.0,
                               rtol=1e-3)
    assert exact != pytest.approx(1.0)


@tensorflow_only
def test_config_round_trip_and_bad_arguments():
    constraint = BidirectionalSpectralNorm(scale=1.2, power_iterations=3, transposed=True)
    clone = keras.constraints.deserialize(keras.constraints.serialize(constraint))
    assert isinstance(clone, BidirectionalSpectralNorm)
    assert clone.get_config() == constraint.get_config()
    with pytest.raises(ValueError, match="scale"):
        SpectralNorm(scale=-1.0)
    with pytest.raises(ValueError, match="rank >= 2"):
        SpectralNorm()(keras.Variable(np.ones(3), dtype="float32"))


@tensorflow_only
def test_a_reused_python_id_never_hands_over_another_variables_vectors():
    import weakref

    constraint = SpectralNorm(power_iterations=50)
    kernel = keras.Variable(np.random.default_rng(0).standard_normal((3, 2)), dtype="float32")
    # As if a collected variable of another shape had held this id before.
    gone = keras.Variable(np.ones((5, 4)), dtype="float32")
    constraint._vectors[id(kernel)] = (weakref.ref(gone),
                                       [keras.Variable(np.ones((1, 4)), dtype="float32")])
    projected = ops.convert_to_numpy(constraint(kernel))
    np.testing.assert_allclose(np.linalg.svd(projected, compute_uv=False)[0], 1.0, rtol=1e-3)
