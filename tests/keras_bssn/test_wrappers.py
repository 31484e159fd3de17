"""SN/BSN wrapper semantics, checked against NumPy (runs under any Keras backend)."""

import keras
import numpy as np
import pytest
from keras import ops

from keras_bssn import BidirectionalSpectralNormalization, SpectralNormalization, spectral
from tests.keras_bssn.layer_cases import CASE_IDS, LAYER_CASES, make_input
from tests.keras_bssn.autodiff import gradient

WRAPPERS = [SpectralNormalization, BidirectionalSpectralNormalization]


def _built(wrapper_class, factory, shape, integer, **kwargs):
    wrapper = wrapper_class(factory(), **kwargs)
    wrapper(make_input(shape, integer))
    return wrapper


def _kernel(wrapper):
    return ops.convert_to_numpy(wrapper._kernel_variable().value)


def _vectors(wrapper):
    return [ops.convert_to_numpy(vector.value) for vector in wrapper.vectors]


@pytest.mark.parametrize("wrapper_class", WRAPPERS)
@pytest.mark.parametrize("case", LAYER_CASES, ids=CASE_IDS)
def test_sigma_converges_to_numpy_svd_and_effective_norm_is_scale(case, wrapper_class):
    _, factory, shape, integer = case
    wrapper = _built(wrapper_class, factory, shape, integer, scale=1.7, power_iterations=60)
    for _ in range(3):
        wrapper(make_input(shape, integer), training=True)

    views = spectral.matrix_views(_kernel(wrapper), wrapper.layout)
    exact = [np.linalg.svd(ops.convert_to_numpy(view), compute_uv=False)[0] for view in views]
    estimates = [float(sigma) for sigma in wrapper.sigma_estimates()]
    assert len(estimates) == (2 if wrapper_class is BidirectionalSpectralNormalization
                              and wrapper.layout.spatial_axes else 1)
    np.testing.assert_allclose(estimates, exact[: len(estimates)], rtol=1e-3)

    effective = ops.convert_to_numpy(wrapper.effective_kernel())
    effective_norms = [np.linalg.svd(ops.convert_to_numpy(view), compute_uv=False)[0]
                       for view in spectral.matrix_views(effective, wrapper.layout)]
    if wrapper_class is SpectralNormalization:
        np.testing.assert_allclose(effective_norms[0], 1.7, rtol=1e-3)
    else:
        # BSN divides by the mean of the views' norms, so the views' norms average to c.
        np.testing.assert_allclose(np.mean(effective_norms), 1.7, rtol=1e-3)


@pytest.mark.parametrize("case", LAYER_CASES, ids=CASE_IDS)
def test_forward_pass_uses_the_normalized_kernel(case):
    _, factory, shape, integer = case
    wrapper = _built(BidirectionalSpectralNormalization, factory, shape, integer, scale=1.3)
    x = make_input(shape, integer, seed=5)
    plain = factory()
    plain(x)
    plain.set_weights(wrapper.layer.get_weights())
    kernel_name = wrapper.layout.attribute
    getattr(plain, kernel_name).assign(wrapper.effective_kernel())
    np.testing.assert_allclose(ops.convert_to_numpy(wrapper(x)),
                               ops.convert_to_numpy(plain(x)), rtol=1e-5, atol=1e-5)


def test_view_layout_of_transposed_convolution_puts_output_channels_last():
    layer = keras.layers.Conv2DTranspose(5, 3)
    layer.build((None, 4, 4, 2))
    kernel = ops.convert_to_numpy(layer.kernel)  # (kh, kw, out=5, in=2)
    view_1, view_2 = spectral.matrix_views(kernel, spectral.kernel_layout(layer))
    np.testing.assert_array_equal(ops.convert_to_numpy(view_1),
                                  kernel.transpose(0, 1, 3, 2).reshape(3 * 3 * 2, 5))
    np.testing.assert_array_equal(ops.convert_to_numpy(view_2), kernel.reshape(3 * 3 * 5, 2))


def test_dense_bsn_equals_sn():
    x = make_input((5,), False)
    sn = SpectralNormalization(keras.layers.Dense(4), scale=1.5)
    bsn = BidirectionalSpectralNormalization(keras.layers.Dense(4), scale=1.5)
    sn(x), bsn(x)
    bsn.set_weights(sn.get_weights())
    np.testing.assert_allclose(ops.convert_to_numpy(sn(x, training=True)),
                               ops.convert_to_numpy(bsn(x, training=True)), rtol=1e-6)
    assert len(bsn.vectors) == 1


def _numpy_power_iteration(matrix, u, iterations):
    for _ in range(iterations):
        v = u @ matrix.T
        v /= np.linalg.norm(v)
        u = v @ matrix
        u /= np.linalg.norm(u)
    return u


@pytest.mark.parametrize("iterations", [1, 3])
def test_training_call_advances_vectors_exactly_power_iterations_times(iterations):
    wrapper = _built(BidirectionalSpectralNormalization, lambda: keras.layers.Conv2D(6, 3),
                     (7, 7, 4), False, power_iterations=iterations)
    before = _vectors(wrapper)
    views = [ops.convert_to_numpy(view)
             for view in spectral.matrix_views(_kernel(wrapper), wrapper.layout)]
    wrapper(make_input((7, 7, 4), False), training=True)
    for view, u_before, u_after in zip(views, before, _vectors(wrapper)):
        np.testing.assert_allclose(u_after, _numpy_power_iteration(view, u_before, iterations),
                                   rtol=1e-4, atol=1e-6)
        assert not np.allclose(u_after, _numpy_power_iteration(view, u_before, iterations + 1),
                               rtol=1e-4, atol=1e-6)


def test_inference_does_not_move_vectors_but_still_normalizes():
    wrapper = _built(SpectralNormalization, lambda: keras.layers.Dense(6), (5,), False,
                     scale=2.0)
    before = _vectors(wrapper)
    x = make_input((5,), False)
    outputs = ops.convert_to_numpy(wrapper(x))
    outputs_training_false = ops.convert_to_numpy(wrapper(x, training=False))
    for u_before, u_after in zip(before, _vectors(wrapper)):
        np.testing.assert_array_equal(u_before, u_after)
    unnormalized = x @ _kernel(wrapper) + ops.convert_to_numpy(wrapper.layer.bias)
    assert not np.allclose(outputs, unnormalized)
    np.testing.assert_allclose(outputs, outputs_training_false)


def test_inside_a_model_fit_advances_and_predict_does_not():
    model = keras.Sequential([keras.Input((5,)),
                              SpectralNormalization(keras.layers.Dense(3), name="sn")])
    model.compile(optimizer="sgd", loss="mse")
    x, y = make_input((5,), False, batch=8), np.zeros((8, 3), "float32")
    before = _vectors(model.get_layer("sn"))
    model.predict(x, verbose=0)
    np.testing.assert_array_equal(before[0], _vectors(model.get_layer("sn"))[0])
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    assert not np.allclose(before[0], _vectors(model.get_layer("sn"))[0])


def test_kernel_variable_keeps_unnormalized_weights():
    wrapper = _built(SpectralNormalization, lambda: keras.layers.Dense(6), (5,), False,
                     scale=0.5)
    kernel_before = _kernel(wrapper)
    for _ in range(3):
        wrapper(make_input((5,), False), training=True)
    np.testing.assert_array_equal(kernel_before, _kernel(wrapper))


def test_dense_gradient_matches_closed_form():
    """d/dW sum(r * (x (cW/sigma))) with sigma = v^T W u and u, v held fixed, by hand."""
    scale = 1.4
    wrapper = _built(SpectralNormalization, lambda: keras.layers.Dense(4, use_bias=False),
                     (6,), False, scale=scale)
    x = make_input((6,), False, batch=3, seed=1)
    r = np.random.default_rng(2).standard_normal((3, 4)).astype("float32")
    kernel = _kernel(wrapper).astype(np.float64)
    u = _vectors(wrapper)[0].astype(np.float64)
    u /= np.linalg.norm(u)
    v = u @ kernel.T
    v /= np.linalg.norm(v)
    sigma = (v @ kernel @ u.T).item()
    upstream = x.T.astype(np.float64) @ r  # d loss / d W_hat
    expected = scale / sigma * upstream - scale / sigma**2 * np.sum(upstream * kernel) * (
        v.T @ u)

    def loss(kernel_value):
        mapping = [(wrapper._kernel_variable(), kernel_value)]
        with keras.StatelessScope(state_mapping=mapping):
            return ops.sum(wrapper(x, training=False) * ops.convert_to_tensor(r))

    np.testing.assert_allclose(gradient(loss, wrapper._kernel_variable().value), expected,
                               rtol=1e-4, atol=1e-6)


def _wrapper_and_plain_twin(case, wrapper_class, **kwargs):
    """A built wrapper of a layer case, an input, an unwrapped twin layer with the same
    weights and its kernel variable, and weights for a scalar loss of the outputs."""
    _, factory, shape, integer = case
    wrapper = _built(wrapper_class, factory, shape, integer, **kwargs)
    x = make_input(shape, integer, seed=3)
    plain = factory()
    plain(x)
    plain.set_weights(wrapper.layer.get_weights())
    plain_kernel = getattr(plain, wrapper.layout.attribute)
    weights = ops.convert_to_tensor(np.random.default_rng(4).standard_normal(
        ops.convert_to_numpy(wrapper(x)).shape).astype("float32"))
    return wrapper, x, plain, plain_kernel, weights


@pytest.mark.parametrize("wrapper_class", WRAPPERS)
@pytest.mark.parametrize("case", LAYER_CASES, ids=CASE_IDS)
def test_gradient_matches_reference_formula_with_fixed_vectors(case, wrapper_class):
    """Autodiff through the wrapper equals autodiff of c W / sigma(W) built independently."""
    scale = 1.2
    wrapper, x, plain, plain_kernel, weights = _wrapper_and_plain_twin(case, wrapper_class,
                                                                       scale=scale)
    kernel_variable = wrapper._kernel_variable()

    # Constant singular-vector estimates, from NumPy.
    fixed = []
    for view, u in zip(spectral.matrix_views(_kernel(wrapper), wrapper.layout),
                       _vectors(wrapper)):
        u = u / np.linalg.norm(u)
        v = u @ ops.convert_to_numpy(view).T
        fixed.append((ops.convert_to_tensor(u), ops.convert_to_tensor(v / np.linalg.norm(v))))

    def reference_loss(kernel_value):
        views = spectral.matrix_views(kernel_value, wrapper.layout)
        sigmas = [ops.sum(ops.matmul(v, view) * u) for view, (u, v) in zip(views, fixed)]
        normalized = scale * kernel_value / ops.mean(ops.stack(sigmas))
        with keras.StatelessScope(state_mapping=[(plain_kernel, normalized)]):
            return ops.sum(plain(x) * weights)

    def wrapper_loss(kernel_value):
        with keras.StatelessScope(state_mapping=[(kernel_variable, kernel_value)]):
            return ops.sum(wrapper(x, training=False) * weights)

    kernel_value = kernel_variable.value
    np.testing.assert_allclose(gradient(wrapper_loss, kernel_value),
                               gradient(reference_loss, kernel_value), rtol=2e-4, atol=1e-6)


def test_zero_kernel_gives_zeros_not_nan_and_recovers():
    wrapper = _built(BidirectionalSpectralNormalization, lambda: keras.layers.Conv2D(4, 3),
                     (6, 6, 2), False)
    wrapper.layer.kernel.assign(np.zeros(wrapper.layer.kernel.shape, "float32"))
    vectors_before = _vectors(wrapper)
    x = make_input((6, 6, 2), False)
    for training in (True, False):
        outputs = ops.convert_to_numpy(wrapper(x, training=training))
        assert np.all(np.isfinite(outputs))
        np.testing.assert_array_equal(outputs, np.broadcast_to(
            ops.convert_to_numpy(wrapper.layer.bias), outputs.shape))
    for before, after in zip(vectors_before, _vectors(wrapper)):
        np.testing.assert_array_equal(before, after)  # a zero u would never recover
    wrapper.layer.kernel.assign(np.random.default_rng(0).standard_normal(
        wrapper.layer.kernel.shape).astype("float32"))
    wrapper(x, training=True)
    assert all(float(sigma) > 0 for sigma in wrapper.sigma_estimates())


@pytest.mark.parametrize("policy, compute_dtype", [("mixed_float16", "float16"),
                                                   ("mixed_bfloat16", "bfloat16")])
def test_mixed_precision_keeps_power_iteration_in_float32(policy, compute_dtype):
    x = make_input((6, 6, 3), False)
    reference = _built(BidirectionalSpectralNormalization, lambda: keras.layers.Conv2D(8, 3),
                       (6, 6, 3), False, scale=1.2)
    keras.config.set_dtype_policy(policy)
    try:
        wrapper = _built(BidirectionalSpectralNormalization, lambda: keras.layers.Conv2D(8, 3),
                         (6, 6, 3), False, scale=1.2)
    finally:
        keras.config.set_dtype_policy("float32")
    wrapper.set_weights(reference.get_weights())
    outputs = wrapper(x, training=True)
    reference(x, training=True)
    assert keras.backend.standardize_dtype(outputs.dtype) == compute_dtype
    assert all(vector.dtype == "float32" for vector in wrapper.vectors)
    assert wrapper.layer.kernel.dtype == "float32"
    sigmas = wrapper.sigma_estimates()
    assert all(keras.backend.standardize_dtype(sigma.dtype) == "float32" for sigma in sigmas)
    # The same float32 iteration as under the float32 policy: no rounding to compute_dtype.
    for mixed, exact in zip(_vectors(wrapper), _vectors(reference)):
        np.testing.assert_allclose(mixed, exact, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(ops.convert_to_numpy(ops.stack(sigmas)),
                               ops.convert_to_numpy(ops.stack(reference.sigma_estimates())),
                               rtol=1e-6)
    assert np.all(np.isfinite(ops.convert_to_numpy(ops.cast(outputs, "float32"))))


def test_wrapping_a_wrapper_is_refused():
    with pytest.raises(ValueError, match="already normalized"):
        SpectralNormalization(SpectralNormalization(keras.layers.Dense(2)))


def test_unsupported_layer_is_refused_with_the_supported_kinds():
    with pytest.raises(ValueError, match=r"LayerNormalization.*Supported layer types: Dense"):
        SpectralNormalization(keras.layers.LayerNormalization(name="norm"))


def test_einsum_dense_without_clear_split_is_refused():
    with pytest.raises(ValueError, match="no clear \\(in, out\\) split"):
        SpectralNormalization(keras.layers.EinsumDense("abc,bcd->abd", (None, 4)))


@pytest.mark.parametrize("kwargs, message", [
    ({"scale": 0.0}, "scale"),
    ({"scale": float("inf")}, "scale"),
    ({"scale": float("nan")}, "scale"),
    ({"power_iterations": 0}, "power_iterations"),
    ({"eps": -1.0}, "eps"),
    ({"vector_updates": "sometimes"}, "vector_updates"),
])
def test_bad_arguments_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SpectralNormalization(keras.layers.Dense(2), **kwargs)


@pytest.mark.parametrize("wrapper_class", WRAPPERS)
def test_config_round_trip(wrapper_class):
    wrapper = wrapper_class(keras.layers.Conv2D(4, 3), scale=1.6, power_iterations=2, eps=1e-8,
                            differentiable_power_iteration=True, vector_updates="explicit",
                            name="d1")
    clone = wrapper_class.from_config(wrapper.get_config())
    assert (clone.scale, clone.power_iterations, clone.eps, clone.name) == (1.6, 2, 1e-8, "d1")
    assert clone.differentiable_power_iteration and clone.vector_updates == "explicit"
    assert isinstance(clone.layer, keras.layers.Conv2D) and clone.layer.filters == 4


def test_keras_file_round_trip_reproduces_outputs_and_vectors(tmp_path):
    inputs = keras.Input((8, 8, 3))
    hidden = BidirectionalSpectralNormalization(keras.layers.Conv2D(4, 3), scale=1.3)(inputs)
    outputs = SpectralNormalization(keras.layers.Dense(1))(keras.layers.Flatten()(hidden))
    model = keras.Model(inputs, outputs)
    x = make_input((8, 8, 3), False, batch=4)
    for _ in range(3):
        model(x, training=True)
    path = tmp_path / "model.keras"
    model.save(path)
    restored = keras.saving.load_model(path)
    np.testing.assert_array_equal(ops.convert_to_numpy(model(x)),
                                  ops.convert_to_numpy(restored(x)))
    for original, loaded in zip(model.non_trainable_weights, restored.non_trainable_weights):
        np.testing.assert_array_equal(ops.convert_to_numpy(original.value),
                                      ops.convert_to_numpy(loaded.value))
    assert len(restored.non_trainable_weights) == 3  # u of 2 views + u of the dense layer


def _official_sigma(view, u):
    """sigma of one official iteration from a stored u, in closed form: ||M^T M u|| / ||M u||
    (v = normalize(M u), u' = normalize(M^T v), sigma = v M u'^T = ||M^T v||)."""
    mu = ops.matmul(view, ops.transpose(u))
    return ops.sqrt(ops.sum(ops.square(ops.matmul(ops.transpose(view), mu)))) / ops.sqrt(
        ops.sum(ops.square(mu)))


@pytest.mark.parametrize("wrapper_class", WRAPPERS)
@pytest.mark.parametrize("case", LAYER_CASES, ids=CASE_IDS)
def test_differentiable_power_iteration_matches_the_official_closed_form(case, wrapper_class):
    """Outputs, kernel gradient and advanced u of the official graph, from a formula of it."""
    scale = 1.2
    wrapper, x, plain, plain_kernel, weights = _wrapper_and_plain_twin(
        case, wrapper_class, scale=scale, differentiable_power_iteration=True)
    kernel_variable = wrapper._kernel_variable()
    stored = [ops.convert_to_tensor(u) for u in _vectors(wrapper)]

    def normalized_kernel(kernel_value):
        views = spectral.matrix_views(kernel_value, wrapper.layout)
        sigmas = [_official_sigma(view, u) for view, u in zip(views, stored)]
        return scale * kernel_value / ops.mean(ops.stack(sigmas))

    def reference_loss(kernel_value):
        with keras.StatelessScope(state_mapping=[(plain_kernel, normalized_kernel(kernel_value))]):
            return ops.sum(plain(x) * weights)

    def wrapper_loss(kernel_value):
        # Vectors restored after every call: each evaluation starts from the same stored u.
        mapping = [(kernel_variable, kernel_value)] + list(zip(wrapper.vectors, stored))
        with keras.StatelessScope(state_mapping=mapping):
            return ops.sum(wrapper(x, training=True) * weights)

    kernel_value = kernel_variable.value
    np.testing.assert_allclose(ops.convert_to_numpy(wrapper_loss(kernel_value)),
                               ops.convert_to_numpy(reference_loss(kernel_value)), rtol=1e-4)
    official = gradient(wrapper_loss, kernel_value)
    np.testing.assert_allclose(official, gradient(reference_loss, kernel_value), rtol=2e-4,
                               atol=1e-5)

    wrapper(x, training=True)
    views = spectral.matrix_views(_kernel(wrapper).astype(np.float64), wrapper.layout, np)
    for view, u_after, u_before in zip(views, _vectors(wrapper),
                                       [ops.convert_to_numpy(u) for u in stored]):
        expected = view.T @ (view @ u_before.T.astype(np.float64))
        np.testing.assert_allclose(u_after, (expected / np.linalg.norm(expected)).T, rtol=1e-4,
                                   atol=1e-6)


def test_the_official_gradient_differs_from_miyatos_until_u_converges():
    def kernel_gradient(differentiable, converge):
        keras.utils.set_random_seed(7)
        wrapper = _built(BidirectionalSpectralNormalization, lambda: keras.layers.Conv2D(6, 3),
                         (7, 7, 4), False, differentiable_power_iteration=differentiable,
                         power_iterations=200 if converge else 1)
        if converge:
            wrapper(make_input((7, 7, 4), False), training=True)
        x = make_input((7, 7, 4), False, seed=1)
        stored = [vector.value for vector in wrapper.vectors]

        def loss(kernel_value):
            mapping = [(wrapper.layer.kernel, kernel_value)] + list(zip(wrapper.vectors, stored))
            with keras.StatelessScope(state_mapping=mapping):
                return ops.sum(ops.square(wrapper(x, training=True)))
        return gradient(loss, wrapper.layer.kernel.value)

    assert not np.allclose(kernel_gradient(True, False), kernel_gradient(False, False),
                           rtol=1e-2, atol=1e-4)
    np.testing.assert_allclose(kernel_gradient(True, True), kernel_gradient(False, True),
                               rtol=1e-3, atol=1e-5)


def test_explicit_vector_updates_look_ahead_in_calls_and_advance_only_when_asked():
    wrapper = _built(BidirectionalSpectralNormalization, lambda: keras.layers.Conv2D(6, 3),
                     (7, 7, 4), False, vector_updates="explicit", scale=1.1)
    x = make_input((7, 7, 4), False)
    before = _vectors(wrapper)
    views = [ops.convert_to_numpy(view)
             for view in spectral.matrix_views(_kernel(wrapper), wrapper.layout)]
    outputs = ops.convert_to_numpy(wrapper(x, training=True))
    for u_before, u_after in zip(before, _vectors(wrapper)):
        np.testing.assert_array_equal(u_before, u_after)
    # The training call used the look-ahead sigma of one iteration: the same outputs as a
    # per-call wrapper that stores its advanced u.
    per_call = _built(BidirectionalSpectralNormalization, lambda: keras.layers.Conv2D(6, 3),
                      (7, 7, 4), False, scale=1.1)
    per_call.set_weights(wrapper.get_weights())
    np.testing.assert_allclose(outputs, ops.convert_to_numpy(per_call(x, training=True)),
                               rtol=1e-5, atol=1e-6)
    wrapper.advance_vectors()
    for view, u_before, u_after in zip(views, before, _vectors(wrapper)):
        np.testing.assert_allclose(u_after, _numpy_power_iteration(view, u_before, 1),
                                   rtol=1e-4, atol=1e-6)


def test_advance_power_iteration_moves_explicit_wrappers_only():
    from keras_bssn import advance_power_iteration

    inputs = keras.Input((5,))
    hidden = SpectralNormalization(keras.layers.Dense(4), vector_updates="explicit",
                                   name="explicit")(inputs)
    outputs = SpectralNormalization(keras.layers.Dense(3), name="per_call")(hidden)
    model = keras.Model(inputs, outputs)
    explicit_before = _vectors(model.get_layer("explicit"))[0]
    per_call_before = _vectors(model.get_layer("per_call"))[0]
    advance_power_iteration(model)
    assert not np.allclose(explicit_before, _vectors(model.get_layer("explicit"))[0])
    np.testing.assert_array_equal(per_call_before, _vectors(model.get_layer("per_call"))[0])


def test_zero_kernel_with_the_official_gradient_stays_finite():
    wrapper = _built(BidirectionalSpectralNormalization, lambda: keras.layers.Conv2D(4, 3),
                     (6, 6, 2), False, differentiable_power_iteration=True)
    wrapper.layer.kernel.assign(np.zeros(wrapper.layer.kernel.shape, "float32"))
    x = make_input((6, 6, 2), False)

    def loss(kernel_value):
        with keras.StatelessScope(state_mapping=[(wrapper.layer.kernel, kernel_value)]):
            return ops.sum(wrapper(x, training=True))

    assert np.all(np.isfinite(gradient(loss, wrapper.layer.kernel.value)))


@pytest.mark.parametrize("wrapper_class", WRAPPERS)
def test_the_wrapped_layers_own_losses_are_kept(wrapper_class):
    inputs = keras.Input((5,))
    dense = keras.layers.Dense(3, activity_regularizer=keras.regularizers.L2(0.5),
                               kernel_regularizer=keras.regularizers.L2(0.25))
    model = keras.Model(inputs, wrapper_class(dense)(inputs))
    x = make_input((5,), False, batch=4)
    outputs = ops.convert_to_numpy(model(x, training=True))
    kernel = ops.convert_to_numpy(dense.kernel)
    # Keras divides an activity penalty by the batch size.
    expected = {0.5 * np.sum(outputs**2) / 4, 0.25 * np.sum(kernel**2)}
    np.testing.assert_allclose(sorted(float(loss) for loss in model.losses), sorted(expected),
                               rtol=1e-5)
