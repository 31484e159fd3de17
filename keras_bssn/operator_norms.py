"""The spectral norm of a convolution as a linear operator on a fixed input grid.

A convolution x -> conv(x, W) on inputs of a given spatial size is a linear map whose largest
singular value ("strict" SN divides by it) exceeds sigma of any reshaped view of the kernel.
`conv_operator_norm` computes it exactly by per-frequency SVDs for circular stride-1
convolutions (Sedghi, Gupta & Long, ICLR 2019), by power iteration through the convolution and
its adjoint otherwise. `axis_padding` is the padding arithmetic that turns a convolution's
padding mode into explicit padding followed by a "valid" convolution, shared with
`keras_bssn.StrictSpectralNormalization`.

Kernels use the Keras layout (*spatial, c_in, c_out). The iterative path runs `keras.ops`
(backend-agnostic); the exact path is float64 NumPy, on the host.

Reference:
    Sedghi, Gupta & Long, "The Singular Values of Convolutional Layers", ICLR 2019.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from keras import ops

__all__ = ["axis_padding", "conv_operator_norm"]

_PADDINGS = ("circular", "same", "valid")
# Upper bound on complex entries materialised at once by the per-frequency SVD (~256 MiB).
_FREQ_CHUNK_ENTRIES = 1 << 24


def axis_padding(size: int, kernel_size: int, stride: int, padding: str,
                 dilation: int = 1) -> tuple[int, int]:
    """The padding that turns one axis of a convolution into a "valid" convolution.

    "same" follows the TF/XLA "SAME" rule, which `keras.ops.conv` follows on every backend;
    "circular" wraps around with the same alignment; "causal" pads the start only.

    Args:
        size: the input's size along the axis.
        kernel_size: the kernel's size along the axis.
        stride: the stride along the axis.
        padding: "valid", "same", "circular" or "causal".
        dilation: the dilation rate along the axis.

    Returns:
        (before, after): how many entries to pad on each side of the axis.

    Raises:
        ValueError: for a "valid" convolution whose kernel is larger than the input.

    Example:

    ```python
    axis_padding(32, 4, 2, "same")  # (1, 1)
    ```
    """
    extent = (kernel_size - 1) * dilation + 1
    if padding == "causal":
        return extent - 1, 0
    if padding == "valid":
        if extent > size:
            raise ValueError(f"A 'valid' convolution with kernel extent {extent} on an input "
                             f"axis of size {size} has an empty output.")
        return 0, 0
    outputs = -(-size // stride)
    total = max((outputs - 1) * stride + extent - size, 0)
    return total // 2, total - total // 2


def _as_tuple(value: int | Sequence[int], rank: int, name: str) -> tuple[int, ...]:
    if isinstance(value, (int, np.integer)):
        out = (int(value),) * rank
    else:
        out = tuple(int(v) for v in value)
    if len(out) != rank or any(v < 1 for v in out):
        raise ValueError(f"`{name}` must be a positive int or {rank} positive ints, got {value!r}.")
    return out


def _circular_freq_norm(w: np.ndarray, grid: tuple[int, ...], return_vector: bool):
    """Exact norm of the stride-1 circular cross-correlation with kernel `w` on `grid`.

    A circular convolution is block-diagonalised by the DFT over the grid, so its singular values
    are those of the c_out x c_in matrices A_f, one per frequency f.
    """
    d = len(grid)
    taps_shape = w.shape[:d]
    c_in, c_out = w.shape[-2:]
    taps = np.indices(taps_shape).reshape(d, -1).T  # (T, d) tap offsets k
    w_flat = w.reshape(-1, c_in * c_out).astype(np.complex128)
    # Keras conv is cross-correlation, y[n] = sum_k W[k] x[n + k - p], so a plane wave
    # x = v e^{+2 pi i f.n/N} comes out as e^{+2 pi i f.(n - p)/N} A_f v with
    # A_f = sum_k W[k]^T e^{+2 pi i f.k/N} (i.e. conj of the usual DFT). The pad offset p is a
    # pure phase. Summing over taps (not a zero-padded FFT) folds kernels larger than the grid
    # correctly and keeps memory bounded by the frequency chunk.
    # A_{-f} = conj(A_f) has the same singular values: half of the last axis suffices.
    half = grid[:-1] + (grid[-1] // 2 + 1,)
    freqs = np.indices(half).reshape(d, -1).T  # (F, d)
    n_grid = np.asarray(grid, dtype=np.int64)
    chunk = max(1, _FREQ_CHUNK_ENTRIES // max(1, c_in * c_out))
    best, best_f = -1.0, None
    for start in range(0, len(freqs), chunk):
        f = freqs[start:start + chunk]
        # Reduce f.k modulo N in integers so large grids keep full phase precision.
        frac = ((f[:, None, :] * taps[None, :, :]) % n_grid) / n_grid
        phase = np.exp(2j * np.pi * frac.sum(-1))  # (F, T)
        blocks = (phase @ w_flat).reshape(-1, c_in, c_out)  # A_f^T, same singular values
        # sigma_max^2 = top eigenvalue of the smaller Gram matrix: batched Hermitian eigvalsh is
        # an order of magnitude faster than batched complex SVD, and the top eigenvalue keeps
        # full relative precision.
        if c_in <= c_out:
            gram = blocks @ np.conj(np.swapaxes(blocks, -1, -2))
        else:
            gram = np.conj(np.swapaxes(blocks, -1, -2)) @ blocks
        s = np.sqrt(np.maximum(np.linalg.eigvalsh(gram)[:, -1], 0.0))
        i = int(np.argmax(s))
        if s[i] > best:
            best, best_f = float(s[i]), f[i]
    if not return_vector:
        return best, None
    frac = ((best_f[None, :] * taps) % n_grid) / n_grid
    a_f = (np.exp(2j * np.pi * frac.sum(-1)) @ w_flat).reshape(c_in, c_out).T  # (c_out, c_in)
    self_conjugate = bool(np.all((2 * best_f) % n_grid == 0))
    if self_conjugate:
        # Phases are +-1 here: A_f is real and so is its top right singular vector.
        v = np.linalg.svd(a_f.real)[2][0]
    else:
        v = np.linalg.svd(a_f)[2][0].conj()
    # Re(v e^{i f.n}) keeps the gain sigma: its +f and -f parts are orthogonal, equally amplified.
    grid_idx = np.indices(grid).reshape(d, -1).T
    wave = np.exp(2j * np.pi * (((grid_idx * best_f) % n_grid) / n_grid).sum(-1))
    x = np.real(wave[:, None] * v[None, :]).reshape(grid + (c_in,))
    return best, x / np.linalg.norm(x)


def _axis_matrices(n: int, k: int, s: int, padding: str) -> tuple[np.ndarray, np.ndarray]:
    """Linear maps of one axis: input -> padded input, and stride adjoint (dilate + full pad)."""
    before, after = axis_padding(n, k, s, padding)
    n_pad = n + before + after
    out = (n_pad - k) // s + 1
    src = np.arange(n_pad) - before
    pad = np.zeros((n_pad, n), dtype=np.float64)
    if padding == "circular":
        pad[np.arange(n_pad), src % n] = 1.0
    else:
        keep = (src >= 0) & (src < n)
        pad[np.arange(n_pad)[keep], src[keep]] = 1.0
    # Adjoint of a stride-s valid correlation = zero-dilate by s into the full valid length,
    # pad k - 1 on both sides, then correlate with the flipped, channel-swapped kernel.
    full = n_pad - k + 1
    up = np.zeros((full + 2 * (k - 1), out), dtype=np.float64)
    up[(k - 1) + np.arange(out) * s, np.arange(out)] = 1.0
    return pad, up


def _apply_axis_maps(x, mats):
    # x: (1, *spatial, c); mats[a] acts on spatial axis a + 1. Dense 0/1 matrices make zero and
    # circular padding (and their adjoints) one code path, with only keras.ops; one small einsum
    # per axis is cheaper in eager mode than tensordot + moveaxis.
    letters = "abc"[: len(mats)]
    for a, m in enumerate(mats):
        out = letters[:a] + "z" + letters[a + 1:]
        x = ops.einsum(f"z{letters[a]},n{letters}k->n{out}k", m, x)
    return x


def _power_iteration_norm(w: np.ndarray, grid: tuple[int, ...], strides: tuple[int, ...],
                          padding: str, iterations: int, tol: float | None, seed: int,
                          dtype: str, return_vector: bool):
    """Power iteration on A^T A for the zero-padded or circular, strided convolution A."""
    d = len(grid)
    k_sizes = w.shape[:d]
    maps = [_axis_matrices(n, k, s, padding) for n, k, s in zip(grid, k_sizes, strides)]
    pads = [ops.convert_to_tensor(p, dtype=dtype) for p, _ in maps]
    pads_t = [ops.convert_to_tensor(p.T, dtype=dtype) for p, _ in maps]
    ups = [ops.convert_to_tensor(u, dtype=dtype) for _, u in maps]
    kernel = ops.convert_to_tensor(w, dtype=dtype)
    flipped = np.swapaxes(np.flip(w, axis=tuple(range(d))), -1, -2)
    kernel_adj = ops.convert_to_tensor(np.ascontiguousarray(flipped), dtype=dtype)

    def forward(x):
        return ops.conv(_apply_axis_maps(x, pads), kernel, strides=strides, padding="valid",
                        data_format="channels_last")

    def adjoint(y):
        xp = ops.conv(_apply_axis_maps(y, ups), kernel_adj, strides=1, padding="valid",
                      data_format="channels_last")
        return _apply_axis_maps(xp, pads_t)

    def norm(t):
        return ops.sqrt(ops.sum(ops.square(t)))

    rng = np.random.default_rng(seed)
    x0 = rng.standard_normal((1,) + grid + (w.shape[-2],))
    x = ops.convert_to_tensor(x0 / np.linalg.norm(x0), dtype=dtype)
    tiny = np.finfo(np.dtype(dtype)).tiny
    previous = None
    for _ in range(iterations):
        z = adjoint(forward(x))
        z_norm = norm(z)
        x = z / ops.maximum(z_norm, tiny)
        if tol is not None:
            # ||A^T A x|| -> sigma^2 from below; stop once it no longer moves.
            current = float(z_norm)
            if previous is not None and abs(current - previous) <= tol * current:
                break
            previous = current
    # ||A x|| for unit x: a lower bound that tightens as x converges.
    sigma = float(norm(forward(x)))
    vector = np.asarray(ops.convert_to_numpy(x), np.float64)[0] if return_vector else None
    return sigma, vector


def conv_operator_norm(kernel: Any, input_shape: int | Sequence[int],
                       strides: int | Sequence[int] = 1, padding: str = "circular",
                       power_iterations: int = 100, *, tol: float | None = None, seed: int = 0,
                       dtype: str = "float32", return_vector: bool = False):
    """The spectral norm of a convolution as a linear operator on a fixed input grid.

    This is the norm "strict" SN divides by; it differs from sigma of any reshaped view of the
    kernel. The operator is `x -> keras.ops.conv(x, kernel, strides, padding)` (bias-free,
    channels_last, cross-correlation) on inputs of spatial shape `input_shape`; "circular" wraps
    the input around with the same alignment as "same" (the alignment does not change the norm).

    Exact for `padding="circular"` with stride 1: the largest singular value of the c_out x c_in
    matrices given by the DFT of the kernel at every frequency of the grid, computed in float64
    NumPy. Any other padding or stride runs `power_iterations` steps of power iteration on
    A^T A with `keras.ops` in `dtype`; the result is then a lower bound that converges from
    below (slowly when the top singular values cluster, which they do for convolutions: check
    with more iterations when the digits matter).

    For a Conv*Transpose layer, pass its kernel unchanged, its strides and padding, and the
    spatial shape of the layer's OUTPUT: the layer is the adjoint of that convolution, which has
    the same norm.

    Args:
        kernel: conv kernel (*spatial, c_in, c_out), 1 to 3 spatial axes (array or tensor).
        input_shape: spatial shape of the input, an int for every axis, or the spatial shape
            followed by the channel count (which must equal c_in), e.g. (32, 32) or (32, 32, 3).
        strides: int or one int per spatial axis.
        padding: "circular", "same" or "valid" (zero padding as in `keras.ops.conv`).
        power_iterations: number of A^T A steps for the iterative path (ignored on the exact one).
        tol: optional early stop when the relative change of sigma^2 falls below it.
        seed: seed of the random start vector.
        dtype: float dtype of the iterative path ("float64" needs x64 mode under JAX).
        return_vector: also return a unit-norm input of shape (*input_shape, c_in) attaining
            (exact path) or approaching (iterative path) the norm.

    Returns:
        The norm as a Python float, or `(norm, vector)` when `return_vector` is True.

    Raises:
        ValueError: for a kernel that is not 1D, 2D or 3D, an input shape whose channels differ
            from the kernel's, an unknown padding, or a "valid" convolution with no output.

    Example:

    ```python
    kernel = np.random.default_rng(0).standard_normal((3, 3, 64, 128))
    strict = conv_operator_norm(kernel, (16, 16))
    view1, _ = keras_bssn.diagnostics.spectral_norm_of_views(kernel)
    strict / view1  # about 1.6: the operator norm exceeds the fan-in view's sigma
    ```

    Reference:
        Sedghi, Gupta & Long, "The Singular Values of Convolutional Layers", ICLR 2019.
    """
    w = np.asarray(ops.convert_to_numpy(kernel), np.float64)
    rank = w.ndim - 2
    if rank not in (1, 2, 3):
        raise ValueError(f"Expected a 1D, 2D or 3D conv kernel (*spatial, c_in, c_out), got "
                         f"shape {w.shape}.")
    shape = (input_shape,) * rank if isinstance(input_shape, (int, np.integer)) else tuple(
        int(v) for v in input_shape)
    if len(shape) == rank + 1:
        if shape[-1] != w.shape[-2]:
            raise ValueError(f"input_shape {tuple(input_shape)} has {shape[-1]} channels but the "
                             f"kernel expects c_in = {w.shape[-2]}.")
        shape = shape[:-1]
    grid = _as_tuple(shape, rank, "input_shape")
    strides = _as_tuple(strides, rank, "strides")
    padding = padding.lower()
    if padding not in _PADDINGS:
        raise ValueError(f"`padding` must be one of {_PADDINGS}, got {padding!r}.")
    if not isinstance(power_iterations, (int, np.integer)) or power_iterations < 1:
        raise ValueError(f"`power_iterations` must be an int >= 1, got {power_iterations!r}.")

    if not np.any(w):
        result = (0.0, None)
    elif padding == "circular" and all(s == 1 for s in strides):
        result = _circular_freq_norm(w, grid, return_vector)
    else:
        result = _power_iteration_norm(w, grid, strides, padding, int(power_iterations), tol,
                                       seed, dtype, return_vector)
    if not return_vector:
        return result[0]
    sigma, vector = result
    if vector is None:  # zero kernel: every input is a maximiser
        vector = np.zeros(grid + (w.shape[-2],))
        vector.flat[0] = 1.0
    return sigma, vector
