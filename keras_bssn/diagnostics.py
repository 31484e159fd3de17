"""Diagnostics for spectrally normalized discriminators: operator norms and weight variances.

What lives here:

- :func:`conv_operator_norm`: the spectral norm of a convolution as a linear OPERATOR on a given
  input grid ("strict" SN), exact by per-frequency SVDs for circular stride-1 convolutions
  (Sedghi, Gupta & Long, ICLR 2019), by power iteration through the convolution and its adjoint
  otherwise.
- :func:`spectral_norm_of_views`: exact (numpy SVD) sigma of the two matrix views of a kernel
  that SN and BSN normalize by (paper.md, "Exact definitions").
- :func:`bai_yin_sigma` and :func:`expected_variance_ratio`: the random-matrix estimate of those
  sigmas and of the per-entry weight variance they leave, relative to LeCun / Xavier.
- :func:`weight_variance_table` and :func:`format_table`: per-layer effective weight variance
  next to the LeCun, Xavier and Kaiming variances.

Kernels use the Keras layout: (*spatial, c_in, c_out) for convolutions, (c_in, c_out) for Dense,
and (*spatial, c_out, c_in) for Conv*Transpose layers. Only ``keras.ops`` runs on the device
(backend-agnostic; tested under TensorFlow and JAX); the exact references are numpy, on the
host.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Iterable, Sequence

import keras
import numpy as np
from keras import ops

from keras_bssn import spectral
from keras_bssn._keras_internals import flatten_layers

__all__ = [
    "conv_operator_norm",
    "spectral_norm_of_views",
    "bai_yin_sigma",
    "expected_variance_ratio",
    "VarianceRow",
    "weight_variance_table",
    "format_table",
]

_PADDINGS = ("circular", "same", "valid")
# Upper bound on complex entries materialised at once by the per-frequency SVD (~256 MiB).
_FREQ_CHUNK_ENTRIES = 1 << 24


# --------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------
def _to_numpy(x: Any) -> np.ndarray:
    return np.asarray(ops.convert_to_numpy(x))


def _fans(shape: Sequence[int], transposed: bool = False) -> tuple[int, int]:
    shape = tuple(int(s) for s in shape)
    if len(shape) < 2:
        raise ValueError(f"A kernel needs at least 2 dimensions, got shape {shape}.")
    receptive = math.prod(shape[:-2])
    c_a, c_b = shape[-2], shape[-1]
    if transposed:
        # A Conv*Transpose kernel is (..., c_out, c_in). Keras's own initializers ignore this and
        # take fan_in = receptive * c_out; the table reports the layer's true direction instead.
        return receptive * c_b, receptive * c_a
    return receptive * c_a, receptive * c_b


def _as_tuple(value: int | Sequence[int], rank: int, name: str) -> tuple[int, ...]:
    if isinstance(value, (int, np.integer)):
        out = (int(value),) * rank
    else:
        out = tuple(int(v) for v in value)
    if len(out) != rank or any(v < 1 for v in out):
        raise ValueError(f"`{name}` must be a positive int or {rank} positive ints, got {value!r}.")
    return out


# --------------------------------------------------------------------------------------------
# Operator norm of a convolution
# --------------------------------------------------------------------------------------------
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


def _pad_amounts(n: int, k: int, s: int, padding: str) -> tuple[int, int, int]:
    """(pad_before, pad_after, output_length) for one spatial axis."""
    if padding == "valid":
        if k > n:
            raise ValueError(f"'valid' convolution with kernel size {k} on an axis of size {n} "
                             "has an empty output.")
        return 0, 0, (n - k) // s + 1
    # TF/XLA "SAME" rule, which keras.ops.conv follows; circular uses the same alignment.
    out = -(-n // s)
    total = max((out - 1) * s + k - n, 0)
    return total // 2, total - total // 2, out


def _axis_matrices(n: int, k: int, s: int, padding: str):
    """Linear maps of one axis: input -> padded input, and stride adjoint (dilate + full pad)."""
    before, after, out = _pad_amounts(n, k, s, padding)
    n_pad = n + before + after
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
    vector = _to_numpy(x)[0].astype(np.float64) if return_vector else None
    return sigma, vector


def conv_operator_norm(kernel: Any, input_shape: int | Sequence[int],
                       strides: int | Sequence[int] = 1, padding: str = "circular",
                       power_iterations: int = 100, *, tol: float | None = None, seed: int = 0,
                       dtype: str = "float32", return_vector: bool = False):
    """Spectral norm of a convolution as a linear operator on a fixed input grid.

    This is the norm "strict" SN would divide by; it differs from sigma of any reshaped view of
    the kernel. The operator is ``x -> keras.ops.conv(x, kernel, strides, padding)`` (bias-free,
    channels_last, cross-correlation) on inputs of spatial shape ``input_shape``; "circular"
    wraps the input around with the same alignment as "same" (the alignment does not change the
    norm).

    Exact for ``padding="circular"`` with stride 1: the largest singular value of the c_out x
    c_in matrices given by the DFT of the kernel at every frequency of the grid (Sedghi, Gupta
    & Long 2019), computed in float64 numpy. Any other padding or stride uses ``power_iterations``
    steps of power iteration on A^T A, run with ``keras.ops`` in ``dtype``; the result is then a
    lower bound that converges from below (slowly when the top singular values cluster, which
    they do for convolutions: check with more iterations when the digits matter).

    For a Conv*Transpose layer, pass its kernel unchanged, its strides and padding, and the
    spatial shape of the layer's OUTPUT: the layer is the adjoint of that convolution, which has
    the same norm.

    Args:
        kernel: conv kernel (*spatial, c_in, c_out), 1 to 3 spatial axes (array or tensor).
        input_shape: spatial shape of the input, an int for every axis, or the spatial shape
            followed by the channel count (which must equal c_in), e.g. (32, 32) or (32, 32, 3).
        strides: int or one int per spatial axis.
        padding: "circular", "same" or "valid" (zero padding as in ``keras.ops.conv``).
        power_iterations: number of A^T A steps for the iterative path (ignored on the exact one).
        tol: optional early stop when the relative change of sigma^2 falls below it.
        seed: seed of the random start vector.
        dtype: float dtype of the iterative path ("float64" needs x64 mode under JAX).
        return_vector: also return a unit-norm input of shape (*input_shape, c_in) attaining
            (exact path) or approaching (iterative path) the norm.

    Returns:
        The norm as a Python float, or ``(norm, vector)`` when ``return_vector`` is True.

    Example:
        >>> w = np.random.default_rng(0).standard_normal((3, 3, 64, 128))
        >>> strict = conv_operator_norm(w, (16, 16))
        >>> strict / spectral_norm_of_views(w)[0]  # about 2 for such kernels
    """
    w = _to_numpy(kernel).astype(np.float64)
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


# --------------------------------------------------------------------------------------------
# Views and random-matrix estimates
# --------------------------------------------------------------------------------------------
def spectral_norm_of_views(kernel: Any, transposed: bool = False) -> tuple[float, float]:
    """Exact sigma of view 1 and view 2 of a kernel (numpy, float64).

    View 1 = reshape(W, (kh*kw*c_in, c_out)) (what SN normalizes by); view 2 =
    reshape(W with c_in and c_out swapped, (kh*kw*c_out, c_in)) (BSN's extra view).

    Args:
        kernel: (*spatial, c_in, c_out) kernel, or (c_in, c_out) for Dense (array or tensor).
        transposed: the kernel is a Conv*Transpose kernel (*spatial, c_out, c_in); its last two
            axes are swapped first so view 1 still ends with the output channels.

    Returns:
        (sigma(view 1), sigma(view 2)) as Python floats.

    Example:
        >>> s1, s2 = spectral_norm_of_views(np.ones((3, 3, 2, 4)))
    """
    kernel = _to_numpy(kernel).astype(np.float64)
    return spectral.exact_view_norms(kernel, spectral.layout_for_kernel(kernel.ndim, transposed))


def bai_yin_sigma(shape: Sequence[int], transposed: bool = False, stddev: float = 1.0) -> float:
    """Bai-Yin estimate of sigma(view 1) for a kernel of i.i.d. N(0, stddev^2) entries.

    The largest singular value of an m x n Gaussian matrix is close to sqrt(m) + sqrt(n)
    (slightly below it for small matrices).

    Args:
        shape: kernel shape (*spatial, c_in, c_out), or (c_in, c_out).
        transposed: the shape is a Conv*Transpose kernel (*spatial, c_out, c_in).
        stddev: standard deviation of the entries.

    Returns:
        stddev * (sqrt(rows) + sqrt(cols)) of view 1, i.e. sqrt(fan_in) + sqrt(c_out).

    Example:
        >>> bai_yin_sigma((3, 3, 256, 512))  # sqrt(2304) + sqrt(512) ~ 70.6
    """
    fan_in, _ = _fans(shape, transposed)
    c_out = int(shape[-2] if transposed else shape[-1])
    return float(stddev * (math.sqrt(fan_in) + math.sqrt(c_out)))


def expected_variance_ratio(shape: Sequence[int], method: str = "sn", scale: float = 1.0,
                            transposed: bool = False) -> float:
    """Bai-Yin prediction of Var(W_hat) relative to its reference initialization.

    For i.i.d. Gaussian W the ratio does not depend on W's scale. "sn" (and SSN with ``scale``)
    compares scale^2 / sigma1^2 with LeCun's 1/fan_in; "bsn" (and BSSN) compares
    scale^2 / ((sigma1 + sigma2) / 2)^2 with Xavier's 2 / (fan_in + fan_out), where sigma1 and
    sigma2 are the Bai-Yin estimates of the two views.

    Args:
        shape: kernel shape (*spatial, c_in, c_out), or (c_in, c_out).
        method: "sn" or "bsn" (case-insensitive; "ssn"/"bssn" are accepted as aliases).
        scale: the constant c of SSN/BSSN.
        transposed: the shape is a Conv*Transpose kernel (*spatial, c_out, c_in).

    Returns:
        The predicted ratio (1 would mean exactly the LeCun, resp. Xavier, variance).

    Example:
        >>> expected_variance_ratio((3, 3, 3, 64), "sn")   # ~0.16
        >>> expected_variance_ratio((3, 3, 3, 64), "bsn")
    """
    fan_in, fan_out = _fans(shape, transposed)
    shape = tuple(int(s) for s in shape)
    receptive = math.prod(shape[:-2])
    c_in, c_out = fan_in // receptive, fan_out // receptive
    sigma1 = math.sqrt(fan_in) + math.sqrt(c_out)
    sigma2 = math.sqrt(fan_out) + math.sqrt(c_in)
    method = method.lower()
    if method in ("sn", "ssn"):
        return float(scale ** 2 / sigma1 ** 2 * fan_in)
    if method in ("bsn", "bssn"):
        return float(scale ** 2 / ((sigma1 + sigma2) / 2) ** 2 * (fan_in + fan_out) / 2)
    raise ValueError(f"`method` must be 'sn' or 'bsn', got {method!r}.")


# --------------------------------------------------------------------------------------------
# Variance table
# --------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class VarianceRow:
    """One layer of :func:`weight_variance_table` (see there for the definitions)."""

    name: str
    layer_class: str
    kernel_shape: tuple[int, ...]
    transposed: bool
    fan_in: int
    fan_out: int
    var: float
    lecun: float
    xavier: float
    kaiming: float
    var_over_lecun: float
    var_over_xavier: float
    var_over_kaiming: float

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _children(obj) -> list:
    if isinstance(obj, keras.Model) or (hasattr(obj, "layers") and
                                        not isinstance(obj, keras.layers.Layer)):
        return list(obj.layers)
    if isinstance(obj, keras.layers.Layer):
        # Custom blocks (e.g. residual blocks) track their sub-layers without a public list.
        return flatten_layers(obj, include_self=False, recursive=False)
    return []


def _layout_of(layer: Any, kernel_rank: int | None = None) -> spectral.KernelLayout | None:
    """The kernel layout of `layer`: `spectral.kernel_layout` for the layers spectral
    normalization supports; for another layer with a `.kernel`, spatial axes first, then
    (in, out); None for a layer with no kernel."""
    try:
        return spectral.kernel_layout(layer)
    except ValueError:
        kernel = getattr(layer, "kernel", None)
        rank = kernel_rank if kernel is None else len(kernel.shape)
        return None if rank is None else spectral.layout_for_kernel(rank)


def _kernel_of(obj) -> tuple[Any, str, spectral.KernelLayout] | None:
    """(effective kernel, class carrying the layout, its layout) of obj, or None if it has no
    kernel."""
    if callable(getattr(obj, "effective_kernel", None)):
        inner = getattr(obj, "layer", obj)
        kernel = obj.effective_kernel()
        return kernel, type(inner).__name__, _layout_of(inner, len(kernel.shape))
    if not isinstance(obj, keras.layers.Layer):
        return None
    layout = _layout_of(obj)
    if layout is None:
        return None
    if not obj.built:
        raise ValueError(f"Layer {obj.name!r} is not built yet; call the model on an input "
                         "(or build it) first.")
    return getattr(obj, layout.attribute), type(obj).__name__, layout


def _collect(obj, prefix: str, out: list, is_root: bool) -> None:
    name = getattr(obj, "name", None) or getattr(getattr(obj, "layer", None), "name", None) \
        or f"layer_{len(out)}"
    found = _kernel_of(obj)
    if found is not None:
        out.append((prefix + name, *found))
        return
    # Layers inside nested models/blocks get a "block/" path prefix; the root's own do not.
    child_prefix = prefix if is_root else prefix + name + "/"
    for child in _children(obj):
        _collect(child, child_prefix, out, is_root=False)


def weight_variance_table(model_or_layers: Any) -> list[VarianceRow]:
    """Per-layer effective weight variance next to LeCun, Xavier and Kaiming.

    Walks a Keras model (nested models and custom blocks included) or an iterable of layers and
    makes one row per object with a kernel:

    - an object with a callable ``effective_kernel()`` (our SN/BSN wrappers, or any duck-typed
      equivalent) uses that, the normalized kernel the forward pass sees; its ``.layer`` (if
      any) tells the layer class, and its sub-layers are not visited again;
    - any other object with a non-None ``.kernel`` (plain Keras Dense/Conv layers) uses it as is.

    Kernel axes come from `keras_bssn.spectral.kernel_layout` (Dense, EinsumDense, every
    convolution, depthwise and transposed ones included, and Embedding); another layer with a
    `.kernel` is read as (*spatial, c_in, c_out). fan_in = receptive * c_in and fan_out =
    receptive * c_out with receptive = prod(spatial) (Keras's convention, but in the layer's
    true direction: for a Conv*Transpose kernel (..., c_out, c_in) Keras's own initializers
    swap them). ``transposed`` marks a kernel that stores its output axes before its inputs.
    ``var`` is the population variance (ddof 0) of the kernel entries; LeCun = 1/fan_in,
    Xavier = 2/(fan_in + fan_out), Kaiming = 2/fan_in.

    Args:
        model_or_layers: a Keras model, a layer, a wrapper, or an iterable of them.

    Returns:
        A list of :class:`VarianceRow` (``row.to_dict()`` for a plain dict), in layer order.

    Example:
        >>> rows = weight_variance_table(discriminator)
        >>> print(format_table(rows))
    """
    if isinstance(model_or_layers, keras.Model) and not model_or_layers.built:
        raise ValueError(f"Model {model_or_layers.name!r} is not built yet; call it on an input "
                         "(or build it) first.")
    found: list = []
    if isinstance(model_or_layers, (list, tuple)):
        for item in model_or_layers:
            _collect(item, "", found, is_root=False)
    else:
        _collect(model_or_layers, "", found, is_root=True)
    rows = []
    for name, kernel, class_name, layout in found:
        w = _to_numpy(kernel).astype(np.float64)
        receptive = math.prod(w.shape[axis] for axis in layout.spatial_axes)
        fan_in = receptive * math.prod(w.shape[axis] for axis in layout.in_axes)
        fan_out = receptive * math.prod(w.shape[axis] for axis in layout.out_axes)
        transposed = max(layout.in_axes) > max(layout.out_axes)
        var = float(np.var(w))
        lecun, xavier, kaiming = 1.0 / fan_in, 2.0 / (fan_in + fan_out), 2.0 / fan_in
        rows.append(VarianceRow(
            name=name, layer_class=class_name, kernel_shape=tuple(int(s) for s in w.shape),
            transposed=transposed, fan_in=fan_in, fan_out=fan_out, var=var, lecun=lecun,
            xavier=xavier, kaiming=kaiming, var_over_lecun=var / lecun,
            var_over_xavier=var / xavier, var_over_kaiming=var / kaiming))
    return rows


def format_table(rows: Iterable[VarianceRow | dict]) -> str:
    """Fixed-width text rendering of :func:`weight_variance_table` rows.

    Args:
        rows: :class:`VarianceRow` objects or their dicts.

    Returns:
        The table as one string (a header line, a rule, one line per row).

    Example:
        >>> print(format_table(weight_variance_table(model)))
    """
    dicts = [r.to_dict() if isinstance(r, VarianceRow) else dict(r) for r in rows]
    columns = [
        ("layer", lambda r: r["name"] + (" (T)" if r.get("transposed") else "")),
        ("kernel shape", lambda r: "x".join(str(s) for s in r["kernel_shape"])),
        ("fan_in", lambda r: str(r["fan_in"])),
        ("fan_out", lambda r: str(r["fan_out"])),
        ("Var(W_eff)", lambda r: f"{r['var']:.3e}"),
        ("LeCun", lambda r: f"{r['lecun']:.3e}"),
        ("Xavier", lambda r: f"{r['xavier']:.3e}"),
        ("Kaiming", lambda r: f"{r['kaiming']:.3e}"),
        ("/LeCun", lambda r: f"{r['var_over_lecun']:.3f}"),
        ("/Xavier", lambda r: f"{r['var_over_xavier']:.3f}"),
        ("/Kaiming", lambda r: f"{r['var_over_kaiming']:.3f}"),
    ]
    cells = [[fmt(r) for _, fmt in columns] for r in dicts]
    widths = [max([len(title)] + [len(row[i]) for row in cells])
              for i, (title, _) in enumerate(columns)]

    def line(values):
        # Names left-aligned, numbers right-aligned so the digits line up.
        return "  ".join(v.ljust(w) if i == 0 else v.rjust(w)
                         for i, (v, w) in enumerate(zip(values, widths)))

    out = [line([title for title, _ in columns]), "  ".join("-" * w for w in widths)]
    out.extend(line(row) for row in cells)
    return "\n".join(out)
