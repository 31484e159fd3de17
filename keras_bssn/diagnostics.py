"""Diagnosing a spectrally normalized model: operator norms, view norms, weight variances.

What a user calls to see what a normalization does to their own model:

- `conv_operator_norm`: the spectral norm of a convolution as a linear operator on a given
  input grid, the norm "strict" SN divides by (from `keras_bssn.operator_norms`).
- `spectral_norm_of_views`: the exact sigma of the two matrix views of a kernel that SN and
  BSN normalize by.
- `bai_yin_sigma` and `expected_variance_ratio`: the random-matrix estimates of those sigmas
  and of the per-entry weight variance they leave, relative to LeCun / Xavier.
- `weight_variance_table`: per layer of a model, the variance of the kernel its forward pass
  uses, next to the LeCun, Xavier and Kaiming variances.

Kernels use the Keras layout: (*spatial, c_in, c_out) for convolutions, (c_in, c_out) for
Dense, and (*spatial, c_out, c_in) for Conv*Transpose layers. The exact references are float64
NumPy, on the host.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Sequence

import keras
import numpy as np
from keras import ops

from keras_bssn import spectral
from keras_bssn._keras_internals import flatten_layers
from keras_bssn.operator_norms import conv_operator_norm

__all__ = [
    "conv_operator_norm",
    "spectral_norm_of_views",
    "bai_yin_sigma",
    "expected_variance_ratio",
    "VarianceRow",
    "weight_variance_table",
]


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


def spectral_norm_of_views(kernel: Any, transposed: bool = False) -> tuple[float, float]:
    """The exact sigma of view 1 and view 2 of a kernel (NumPy, float64).

    View 1 = reshape(W, (kh*kw*c_in, c_out)) (what SN normalizes by); view 2 =
    reshape(W with c_in and c_out swapped, (kh*kw*c_out, c_in)) (BSN's extra view).

    Args:
        kernel: (*spatial, c_in, c_out) kernel, or (c_in, c_out) for Dense (array or tensor).
        transposed: the kernel is a Conv*Transpose kernel (*spatial, c_out, c_in); its last two
            axes are swapped first so view 1 still ends with the output channels.

    Returns:
        (sigma(view 1), sigma(view 2)) as Python floats.

    Example:

    ```python
    layer = keras.layers.Conv2D(64, 3)
    layer.build((None, 32, 32, 16))
    sigma_view1, sigma_view2 = spectral_norm_of_views(layer.kernel)
    ```
    """
    kernel = np.asarray(ops.convert_to_numpy(kernel), np.float64)
    return spectral.exact_view_norms(kernel, spectral.layout_for_kernel(kernel.ndim, transposed))


def bai_yin_sigma(shape: Sequence[int], transposed: bool = False, stddev: float = 1.0) -> float:
    """The Bai-Yin estimate of sigma(view 1) for a kernel of i.i.d. N(0, stddev^2) entries.

    The largest singular value of an m x n Gaussian matrix is close to sqrt(m) + sqrt(n)
    (slightly below it for small matrices).

    Args:
        shape: kernel shape (*spatial, c_in, c_out), or (c_in, c_out).
        transposed: the shape is a Conv*Transpose kernel (*spatial, c_out, c_in).
        stddev: standard deviation of the entries.

    Returns:
        stddev * (sqrt(rows) + sqrt(cols)) of view 1, i.e. sqrt(fan_in) + sqrt(c_out).

    Example:

    ```python
    bai_yin_sigma((3, 3, 256, 512))  # sqrt(2304) + sqrt(512), about 70.6
    ```
    """
    fan_in, _ = _fans(shape, transposed)
    c_out = int(shape[-2] if transposed else shape[-1])
    return float(stddev * (math.sqrt(fan_in) + math.sqrt(c_out)))


def expected_variance_ratio(shape: Sequence[int], method: str = "sn", scale: float = 1.0,
                            transposed: bool = False) -> float:
    """The Bai-Yin prediction of Var(W_hat) relative to its reference initialization.

    For i.i.d. Gaussian W the ratio does not depend on W's scale. "sn" (and SSN with `scale`)
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

    Raises:
        ValueError: for a method other than "sn" and "bsn" (or their aliases).

    Example:

    ```python
    expected_variance_ratio((3, 3, 3, 64), "sn")   # about 0.16 of LeCun's variance
    expected_variance_ratio((3, 3, 3, 64), "bsn")  # about 0.8 of Xavier's variance
    ```
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


@dataclasses.dataclass(frozen=True)
class VarianceRow:
    """One layer of `weight_variance_table` (see there for the definitions)."""

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
    """The per-layer variance of the kernels a model uses, next to LeCun, Xavier and Kaiming.

    Walks a Keras model (nested models and custom blocks included) or an iterable of layers and
    makes one row per object with a kernel:

    - an object with a callable `effective_kernel()` (the SN/BSN wrappers, or any duck-typed
      equivalent) uses that, the normalized kernel the forward pass sees; its `.layer` (if any)
      tells the layer class, and its sub-layers are not visited again;
    - any other object with a non-None `.kernel` (plain Keras Dense/Conv layers) uses it as is.

    Kernel axes come from `keras_bssn.spectral.kernel_layout` (Dense, EinsumDense, every
    convolution, depthwise and transposed ones included, and Embedding); another layer with a
    `.kernel` is read as (*spatial, c_in, c_out). fan_in = receptive * c_in and fan_out =
    receptive * c_out with receptive = prod(spatial) (Keras's convention, but in the layer's
    true direction: for a Conv*Transpose kernel (..., c_out, c_in) Keras's own initializers
    swap them). `transposed` marks a kernel that stores its output axes before its inputs.
    `var` is the population variance (ddof 0) of the kernel entries; LeCun = 1/fan_in,
    Xavier = 2/(fan_in + fan_out), Kaiming = 2/fan_in.

    Args:
        model_or_layers: a Keras model, a layer, a wrapper, or an iterable of them.

    Returns:
        A list of `VarianceRow` (`row.to_dict()` for a plain dict), in layer order.

    Raises:
        ValueError: for a model or layer that is not built yet.

    Example:

    ```python
    model = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Conv2D(64, 3),
                              keras.layers.Flatten(), keras.layers.Dense(1)])
    for row in weight_variance_table(keras_bssn.spectral_normalize(model)):
        print(row.name, row.kernel_shape, row.var_over_lecun, row.var_over_xavier)
    ```
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
        w = np.asarray(ops.convert_to_numpy(kernel), np.float64)
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

