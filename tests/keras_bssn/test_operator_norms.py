"""keras_bssn.operator_norms: a convolution's norm as an operator, and the padding arithmetic.

The references are dense matrices built column by column (one basis input at a time), so they
share no code with the FFT or power-iteration paths under test.
"""
import math

import keras
import numpy as np
import pytest
from keras import ops

from keras_bssn import operator_norms
from keras_bssn.operator_norms import axis_padding, conv_operator_norm


def _circular_matrix(w, grid, stride=1):
    """Dense matrix of y[m, o] = sum_{k, i} x[(m*s + k) mod N, i] w[k, i, o], in numpy."""
    d = len(grid)
    c_in, c_out = w.shape[-2:]
    n = math.prod(grid) * c_in
    cols = []
    for j in range(n):
        x = np.zeros(n)
        x[j] = 1.0
        x = x.reshape(grid + (c_in,))
        y = np.zeros(grid + (c_out,))
        for tap in np.ndindex(*w.shape[:d]):
            y += np.roll(x, shift=tuple(-t for t in tap), axis=tuple(range(d))) @ w[tap]
        y = y[tuple(slice(None, None, stride) for _ in range(d))]
        cols.append(y.ravel())
    return np.stack(cols, axis=1)


def _keras_conv_matrix(w, grid, strides, padding):
    """Dense matrix of keras.ops.conv on `grid`, from the whole identity as one batch."""
    c_in = w.shape[-2]
    n = math.prod(grid) * c_in
    basis = np.eye(n, dtype="float32").reshape((n,) + tuple(grid) + (c_in,))
    y = ops.conv(basis, w.astype("float32"), strides, padding, data_format="channels_last")
    return ops.convert_to_numpy(y).reshape(n, -1).T.astype(np.float64)


def _keras_conv_transpose_matrix(w, grid, strides, padding):
    c_in = w.shape[-1]  # a transposed-conv kernel is (..., c_out, c_in)
    n = math.prod(grid) * c_in
    basis = np.eye(n, dtype="float32").reshape((n,) + tuple(grid) + (c_in,))
    y = ops.conv_transpose(basis, w.astype("float32"), strides, padding,
                           data_format="channels_last")
    return ops.convert_to_numpy(y).reshape(n, -1).T.astype(np.float64)


# ---------------------------------------------------------------------------------------------
# conv_operator_norm
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape, grid", [
    ((3, 3, 2, 3), (5, 6)),
    ((2, 4, 3, 2), (4, 5)),        # non-square kernel, c_in > c_out
    ((1, 1, 3, 5), (3, 3)),        # 1x1 conv: the norm is that of the c_in x c_out matrix
    ((5, 5, 2, 2), (3, 4)),        # kernel larger than the grid: taps wrap around
    ((3, 2, 1), (7,)),             # 1D
    ((2, 2, 2, 1, 2), (3, 4, 3)),  # 3D
])
def test_fft_norm_matches_explicit_circular_matrix(shape, grid):
    w = np.random.default_rng(0).standard_normal(shape)
    dense = _circular_matrix(w, grid)
    exact = np.linalg.norm(dense, 2)
    sigma, vector = conv_operator_norm(w, grid, return_vector=True)
    assert isinstance(sigma, float)
    np.testing.assert_allclose(sigma, exact, rtol=1e-10)
    assert vector.shape == grid + (shape[-2],)
    np.testing.assert_allclose(np.linalg.norm(vector), 1.0, rtol=1e-12)
    # The returned input attains the norm (a real vector, also at self-conjugate frequencies).
    np.testing.assert_allclose(np.linalg.norm(dense @ vector.ravel()), exact, rtol=1e-10)
    # Channels in input_shape and an int grid are accepted.
    assert conv_operator_norm(w, grid + (shape[-2],)) == pytest.approx(exact, rel=1e-10)
    if len(set(grid)) == 1:
        assert conv_operator_norm(w, grid[0]) == pytest.approx(exact, rel=1e-10)


def test_fft_norm_accepts_keras_tensors_and_1x1_is_matrix_norm():
    w = np.random.default_rng(1).standard_normal((1, 1, 4, 6))
    expected = np.linalg.norm(w[0, 0], 2)
    assert conv_operator_norm(keras.Variable(w.astype("float32")), (4, 4)) == pytest.approx(
        expected, rel=1e-6)


@pytest.mark.parametrize("shape, grid, strides, padding", [
    ((3, 3, 2, 3), (6, 7), 1, "same"),
    ((4, 4, 2, 3), (8, 8), 2, "same"),      # the discriminator's 4x4 stride-2 layers
    ((3, 3, 2, 3), (7, 6), 2, "valid"),     # odd sizes: trailing inputs unused
    ((4, 3, 2, 2), (7, 7), (2, 1), "same"),
    ((3, 2, 3), (9,), 2, "same"),           # 1D
    ((2, 2, 2, 2, 2), (4, 3, 4), 2, "same"),  # 3D
])
def test_power_iteration_matches_explicit_conv_matrix(shape, grid, strides, padding):
    w = np.random.default_rng(2).standard_normal(shape)
    dense = _keras_conv_matrix(w, grid, strides, padding)
    exact = np.linalg.norm(dense, 2)
    sigma, vector = conv_operator_norm(w, grid, strides, padding, power_iterations=200,
                                       return_vector=True)
    assert isinstance(sigma, float)
    # Power iteration converges from below; the top of a conv spectrum is clustered, hence the
    # loose lower tolerance.
    assert sigma <= exact * (1 + 1e-5)
    assert sigma >= exact * (1 - 5e-4)
    np.testing.assert_allclose(np.linalg.norm(dense @ vector.ravel()), sigma, rtol=1e-5)


def test_circular_stride2_power_iteration_matches_explicit_matrix():
    w = np.random.default_rng(3).standard_normal((3, 3, 2, 3))
    # A circular shift of the input is orthogonal, so the tap alignment does not matter here.
    exact = np.linalg.norm(_circular_matrix(w, (6, 8), stride=2), 2)
    sigma = conv_operator_norm(w, (6, 8), strides=2, padding="circular", power_iterations=200)
    assert exact * (1 - 5e-4) <= sigma <= exact * (1 + 1e-5)


def test_power_iteration_path_agrees_with_fft_path():
    # Cross-check the two implementations on the one case both can do: circular, stride 1.
    w = np.random.default_rng(4).standard_normal((3, 3, 4, 5))
    fft = conv_operator_norm(w, (8, 8))
    iterative, _ = operator_norms._power_iteration_norm(w, (8, 8), (1, 1), "circular", 200, None,
                                                        0, "float32", False)
    assert fft * (1 - 5e-4) <= iterative <= fft * (1 + 1e-5)


@pytest.mark.parametrize("padding, grid", [("same", (4, 5)), ("valid", (3, 4))])
def test_transposed_conv_layer_norm_is_the_adjoint_conv_norm(padding, grid):
    # A Conv2DTranspose kernel (4, 4, c_out=2, c_in=3) with stride 2, as in the generator.
    w = np.random.default_rng(5).standard_normal((4, 4, 2, 3))
    dense = _keras_conv_transpose_matrix(w, grid, 2, padding)
    exact = np.linalg.norm(dense, 2)
    out_grid = tuple(n * 2 for n in grid) if padding == "same" else tuple(
        (n - 1) * 2 + 4 for n in grid)
    assert dense.shape[0] == math.prod(out_grid) * 2
    sigma = conv_operator_norm(w, out_grid, 2, padding, power_iterations=200)
    assert exact * (1 - 5e-4) <= sigma <= exact * (1 + 1e-5)


def test_conv_operator_norm_validation_and_zero_kernel():
    w = np.ones((3, 3, 2, 4))
    with pytest.raises(ValueError, match="padding"):
        conv_operator_norm(w, (8, 8), padding="reflect")
    with pytest.raises(ValueError, match="channels"):
        conv_operator_norm(w, (8, 8, 3))
    with pytest.raises(ValueError, match="conv kernel"):
        conv_operator_norm(np.ones((3, 4)), (8,))
    with pytest.raises(ValueError, match="empty output"):
        conv_operator_norm(w, (2, 8), padding="valid")
    assert conv_operator_norm(np.zeros((3, 3, 2, 4)), (5, 5), padding="same") == 0.0


@pytest.mark.parametrize("padding, size, kernel_size, stride, dilation", [
    ("same", 8, 4, 2, 1),
    ("same", 7, 3, 2, 1),
    ("same", 9, 3, 1, 2),
    ("valid", 7, 3, 2, 1),
    ("valid", 9, 2, 1, 3),
])
def test_axis_padding_makes_a_valid_convolution_of_the_layers_own(padding, size, kernel_size,
                                                                   stride, dilation):
    x = np.random.default_rng(12).standard_normal((1, size, 2)).astype("float32")
    w = np.random.default_rng(13).standard_normal((kernel_size, 2, 3)).astype("float32")
    padded = ops.pad(x, [(0, 0), axis_padding(size, kernel_size, stride, padding, dilation),
                         (0, 0)])
    explicit = ops.conv(padded, w, stride, "valid", dilation_rate=dilation)
    expected = ops.conv(x, w, stride, padding, dilation_rate=dilation)
    np.testing.assert_allclose(ops.convert_to_numpy(explicit), ops.convert_to_numpy(expected),
                               rtol=1e-5, atol=1e-5)


def test_axis_padding_causal_circular_and_empty_output():
    # Causal pads the dilated kernel's extent, all before; circular aligns as "same".
    assert axis_padding(7, 2, 1, "causal", dilation=2) == (2, 0)
    assert axis_padding(8, 4, 2, "circular") == axis_padding(8, 4, 2, "same") == (1, 1)
    with pytest.raises(ValueError, match="empty output"):
        axis_padding(4, 3, 1, "valid", dilation=2)
