"""Matrix views of a layer's kernel, power iteration, and exact spectral norms.

Everything here is a pure function of its arguments (`keras.ops`, so it runs on any Keras
backend), except `exact_spectral_norm`, which is a NumPy reference for tests and diagnostics.

The two views follow the BSN paper. With a kernel laid out as (*spatial, *in, *out):

- view 1 ("fan-in view", popular SN):   reshape(W, (prod(spatial + in), prod(out)))
- view 2 (the extra view of BSN):       reshape(swap(in, out), (prod(spatial + out), prod(in)))

A kernel with no spatial axes (Dense, Embedding, EinsumDense) has view 2 equal to the transpose
of view 1, so both views share one spectral norm and BSN reduces to SN there.

Reference:
    Lin, Sekar & Fanti, "Why Spectral Normalization Stabilizes GANs: Analysis and
    Improvements", NeurIPS 2021 (arXiv 2009.02773).
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Sequence

import keras
import numpy as np
from keras import ops

SUPPORTED_LAYERS = (
    "Dense",
    "EinsumDense",
    "Conv1D",
    "Conv2D",
    "Conv3D",
    "Conv1DTranspose",
    "Conv2DTranspose",
    "Conv3DTranspose",
    "DepthwiseConv1D",
    "DepthwiseConv2D",
    "Embedding",
)


@dataclasses.dataclass(frozen=True)
class KernelLayout:
    """Where a kernel keeps its spatial, input and output axes.

    Args:
        attribute: name of the layer attribute holding the kernel variable.
        spatial_axes: kernel axes that slide over the input (empty for dense kernels).
        in_axes: kernel axes contracted with the input features.
        out_axes: kernel axes that index output features.
    """

    attribute: str
    spatial_axes: tuple[int, ...]
    in_axes: tuple[int, ...]
    out_axes: tuple[int, ...]

    @property
    def has_second_view(self) -> bool:
        """Whether view 2 differs from a transpose of view 1 (only with spatial axes)."""
        return bool(self.spatial_axes)

    def view_shapes(self, kernel_shape: Sequence[int]) -> tuple[tuple[int, int], ...]:
        """The (rows, cols) of view 1 and, if it is distinct, view 2."""
        spatial = math.prod(kernel_shape[a] for a in self.spatial_axes)
        fan_in = math.prod(kernel_shape[a] for a in self.in_axes)
        fan_out = math.prod(kernel_shape[a] for a in self.out_axes)
        shapes = ((spatial * fan_in, fan_out),)
        if self.has_second_view:
            shapes += ((spatial * fan_out, fan_in),)
        return shapes


def layout_for_kernel(ndim: int, transposed: bool = False) -> KernelLayout:
    """The layout of a raw kernel: spatial axes first, then (in, out), or (out, in) if transposed.

    Args:
        ndim: the kernel's rank (2 for Dense, 4 for Conv2D, ...).
        transposed: a Conv*Transpose kernel, which Keras keeps as (..., out, in).

    Returns:
        The `KernelLayout` of attribute "kernel".

    Raises:
        ValueError: for a rank below 2.
    """
    if ndim < 2:
        raise ValueError(f"A kernel needs at least 2 dimensions, got {ndim}.")
    rank = ndim - 2
    in_axis, out_axis = (rank + 1, rank) if transposed else (rank, rank + 1)
    return KernelLayout("kernel", tuple(range(rank)), (in_axis,), (out_axis,))


def _einsum_layout(equation: str, layer_name: str) -> KernelLayout:
    match = re.fullmatch(r"([a-zA-Z.]+),([a-zA-Z]+)->([a-zA-Z.]+)", equation.replace(" ", ""))
    if match is None:
        raise ValueError(f"EinsumDense layer '{layer_name}' has an equation '{equation}' that "
                         "is not of the form 'input,kernel->output'.")
    input_spec, kernel_spec, output_spec = match.groups()
    in_axes, out_axes = [], []
    for axis, letter in enumerate(kernel_spec):
        contracted = letter in input_spec and letter not in output_spec
        produced = letter in output_spec and letter not in input_spec
        if not (contracted or produced):
            raise ValueError(
                f"EinsumDense layer '{layer_name}' (equation '{equation}') has kernel axis "
                f"'{letter}' that is neither only contracted with the input nor only present in "
                "the output, so its kernel has no clear (in, out) split to normalize. Wrap a "
                "layer whose kernel axes are each either input or output features."
            )
        (in_axes if contracted else out_axes).append(axis)
    return KernelLayout("kernel", (), tuple(in_axes), tuple(out_axes))


def kernel_layout(layer: keras.layers.Layer) -> KernelLayout:
    """Describes the kernel of a supported layer.

    Args:
        layer: a Dense, EinsumDense, Conv1D/2D/3D, Conv1D/2D/3DTranspose, DepthwiseConv1D/2D or
            Embedding layer (or a subclass of one).

    Returns:
        The layer's `KernelLayout`.

    Raises:
        ValueError: for any other layer, naming it and the supported kinds.

    Example:

    ```python
    layout = kernel_layout(keras.layers.Conv2DTranspose(8, 3))
    layout.spatial_axes, layout.in_axes, layout.out_axes  # (0, 1), (3,), (2,)
    ```
    """
    layers = keras.layers
    transposed = {layers.Conv1DTranspose: 1, layers.Conv2DTranspose: 2, layers.Conv3DTranspose: 3}
    # Depthwise kernels are (*spatial, in, depth_multiplier): the paper's view applied to the last
    # two axes, as keras.layers.SpectralNormalization and TF-Addons do.
    convolutions = {layers.Conv1D: 1, layers.Conv2D: 2, layers.Conv3D: 3,
                    layers.DepthwiseConv1D: 1, layers.DepthwiseConv2D: 2}
    for layer_class, rank in transposed.items():
        if isinstance(layer, layer_class):
            return layout_for_kernel(rank + 2, transposed=True)
    for layer_class, rank in convolutions.items():
        if isinstance(layer, layer_class):
            return layout_for_kernel(rank + 2)
    if isinstance(layer, layers.EinsumDense):
        return _einsum_layout(layer.equation, layer.name)
    if isinstance(layer, layers.Dense):
        return KernelLayout("kernel", (), (0,), (1,))
    if isinstance(layer, layers.Embedding):
        # An embedding lookup is one_hot(ids) @ E: rows are inputs, columns outputs.
        return KernelLayout("embeddings", (), (0,), (1,))
    raise ValueError(
        f"Layer '{layer.name}' of type {type(layer).__name__} is not supported by spectral "
        f"normalization. Supported layer types: {', '.join(SUPPORTED_LAYERS)} (and their "
        "subclasses). Leave this layer unwrapped, or exclude it with the `layer_filter` of "
        "`keras_bssn.spectral_normalize`."
    )


def matrix_views(kernel, layout: KernelLayout, array_module=ops) -> list:
    """The matrices whose spectral norms SN (view 1) and BSN (views 1 and 2) divide by.

    Args:
        kernel: the kernel tensor, laid out as `layout` says.
        layout: the kernel's `KernelLayout`.
        array_module: `keras.ops` (default), or `numpy` for exact float64 host-side views
            (some backends, JAX by default, compute in float32 only).

    Returns:
        `[view_1]` for kernels without spatial axes, else `[view_1, view_2]`.
    """
    spatial, ins, outs = layout.spatial_axes, layout.in_axes, layout.out_axes
    shapes = layout.view_shapes(tuple(kernel.shape))
    transpose, reshape = array_module.transpose, array_module.reshape
    views = [reshape(transpose(kernel, spatial + ins + outs), shapes[0])]
    if layout.has_second_view:
        views.append(reshape(transpose(kernel, spatial + outs + ins), shapes[1]))
    return views


def _floored_norm(x, eps: float):
    """max(||x||, eps) with a finite gradient at x = 0 (the square root never sees 0)."""
    return ops.sqrt(ops.maximum(ops.sum(ops.square(x)), eps * eps))


def l2_normalize(x, eps: float = 1e-12):
    """Divides `x` by its norm over the whole tensor, floored at `eps`.

    Args:
        x: a tensor.
        eps: floor on the norm, so that a zero tensor stays zero.

    Returns:
        x / max(||x||, eps).
    """
    return x / _floored_norm(x, eps)


def power_iteration(matrix, u, iterations: int = 1, eps: float = 1e-12,
                    differentiable: bool = False):
    """Advances the power-iteration estimate of the largest singular value of `matrix`.

    One iteration, as in the reference code: v = normalize(u M^T), u' = normalize(v M),
    sigma = v M u'^T. A zero matrix keeps the previous u (a zero u would never recover) and
    gives sigma = 0.

    The gradient of sigma depends on `differentiable`:
    - False (Miyato et al., PyTorch, Keras): v and u' are constants, so d sigma / d M = v^T u'.
    - True (the official BSN code): v and u' are functions of M, only the incoming u is a
      constant. With one iteration sigma = ||M^T normalize(M u^T)||, whose gradient has extra
      terms while u has not converged (they vanish at a singular vector).

    Args:
        matrix: (rows, cols) tensor.
        u: (1, cols) current right singular vector estimate (treated as a constant).
        iterations: how many times to advance u (>= 1).
        eps: floor on norms, avoids division by zero.
        differentiable: back-propagate through the iteration (see above).

    Returns:
        (sigma, new_u): a scalar and the advanced (1, cols) vector.
    """
    constant = (lambda x: x) if differentiable else ops.stop_gradient
    u = ops.stop_gradient(u)
    for _ in range(iterations):
        v = constant(l2_normalize(ops.matmul(u, ops.transpose(matrix)), eps))
        unnormalized = ops.matmul(v, matrix)
        nonzero = ops.sum(ops.square(unnormalized)) > eps * eps
        u = constant(ops.where(nonzero, unnormalized / _floored_norm(unnormalized, eps), u))
    return ops.sum(ops.matmul(v, matrix) * u), u


def sigma_from_vector(matrix, u, eps: float = 1e-12):
    """Estimates the largest singular value from a stored u without advancing it.

    sigma = v M u^T with u normalized and v = normalize(u M^T), i.e. ||M u^T||; u and v carry no
    gradient. This is what inference uses: the stored vector, never moved.

    Args:
        matrix: (rows, cols) tensor.
        u: (1, cols) stored right singular vector estimate.
        eps: floor on norms, avoids division by zero.

    Returns:
        The scalar estimate of sigma.
    """
    u = ops.stop_gradient(l2_normalize(u, eps))
    v = ops.stop_gradient(l2_normalize(ops.matmul(u, ops.transpose(matrix)), eps))
    return ops.sum(ops.matmul(v, matrix) * u)


def exact_spectral_norm(matrix) -> float:
    """The largest singular value of a matrix in float64 (a reference for checks).

    Uses the top eigenvalue of the smaller Gram matrix: as exact as an SVD for sigma_max and
    several times cheaper for the tall views of wide convolution kernels.

    Args:
        matrix: a 2D array or tensor.

    Returns:
        sigma_max as a Python float.
    """
    m = np.asarray(keras.ops.convert_to_numpy(matrix), np.float64)
    gram = m.T @ m if m.shape[0] >= m.shape[1] else m @ m.T
    return float(np.sqrt(max(np.linalg.eigvalsh(gram)[-1], 0.0)))


def exact_view_norms(kernel, layout: KernelLayout) -> tuple[float, float]:
    """The exact spectral norms of view 1 and view 2 of a kernel (equal without spatial axes).

    Args:
        kernel: the kernel (array or tensor), laid out as `layout` says.
        layout: the kernel's `KernelLayout`.

    Returns:
        (sigma(view 1), sigma(view 2)) as Python floats, in float64.
    """
    kernel = np.asarray(keras.ops.convert_to_numpy(kernel), np.float64)
    norms = [exact_spectral_norm(view) for view in matrix_views(kernel, layout, np)]
    return norms[0], norms[-1]
