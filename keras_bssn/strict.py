"""Strict spectral normalization: a convolution divided by its norm as a linear operator.

SN divides a conv kernel by sigma of its fan-in view, reshape(W, (k*k*c_in, c_out)). The
convolution itself, x -> conv(x, W) on the layer's input grid, is a much larger matrix whose
spectral norm is bigger (about 1.6x to 2.5x on the CIFAR discriminator's shapes, paper.md), so
"strict" SN shrinks the weights further. The paper discusses it as the variant that trains
worse out of the box; this module makes it available for comparison.

The operator norm is estimated by power iteration on A^T A with a persistent input-shaped
vector, running the layer's own convolution (strides, padding, dilation) and its exact
adjoint. Padding is applied explicitly, so that both directions are "valid" convolutions:
`keras.ops.conv_transpose` with "valid" padding and the right `output_padding` is the exact
adjoint of a strided "valid" `keras.ops.conv` on every backend, which is not true of "same".
The padding arithmetic is `keras_bssn.operator_norms.axis_padding`, which
`keras_bssn.operator_norms.conv_operator_norm` (the same norm for a fixed kernel, as a
diagnostic) shares.
"""

from __future__ import annotations

import keras
from keras import ops

from keras_bssn import spectral
from keras_bssn.operator_norms import axis_padding
from keras_bssn.wrappers import _PACKAGE, _NormalizedKernelWrapper

_CONVOLUTIONS = (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D)
# The other wrappers' options for the official code's matrix views, at the one value strict SN
# has. They are accepted at that value, which `spectral_normalize` passes and files saved by
# keras-bssn 0.2 hold, and refused at any other.
_FIXED_OPTIONS = {"differentiable_power_iteration": False, "vector_updates": "in_call"}


def _check_convolution(layer: keras.layers.Layer) -> None:
    if not isinstance(layer, _CONVOLUTIONS):
        raise ValueError(
            f"StrictSpectralNormalization normalizes Conv1D/2D/3D and kernels without spatial "
            f"axes (Dense, EinsumDense, Embedding); layer '{layer.name}' is a "
            f"{type(layer).__name__}. Use SpectralNormalization for it, or leave it out with "
            "the `layer_filter` of `keras_bssn.spectral_normalize`.")
    if layer.groups != 1:
        raise ValueError(f"StrictSpectralNormalization does not support grouped convolutions; "
                         f"layer '{layer.name}' has groups={layer.groups}.")


@keras.saving.register_keras_serializable(package=_PACKAGE)
class StrictSpectralNormalization(_NormalizedKernelWrapper):
    """Strict SN: W_hat = scale * W / ||conv(., W)||, the norm of the convolution operator.

    For a Conv1D/2D/3D layer, sigma is the largest singular value of the linear map
    x -> conv(x, W) (no bias) on inputs of the layer's spatial size, with the layer's own
    strides, padding and dilation. It is estimated by power iteration with a persistent unit
    vector `u_input` of the input's shape (1, *spatial, c_in), channels last: each training
    call advances it `power_iterations` times, u := normalize(A^T A u), and takes
    sigma = ||A u||; any other call uses the stored vector without moving it. Gradients flow
    through sigma with u held constant, as in SN.

    Kernels without spatial axes (Dense, EinsumDense, Embedding) are their own operator, so
    the wrapper is plain SN there (one view vector `u_view1`).

    The norm depends on the input size: it is taken on the size the layer is built with (or
    `spatial_shape`), and calls on other sizes keep using it.

    Args:
        layer: a Conv1D/2D/3D layer (not grouped), or a Dense, EinsumDense or Embedding layer.
        scale: the constant c multiplying the normalized kernel (1.0 gives strict SN).
        power_iterations: how many times u advances per training call.
        eps: floor on norms and on sigma.
        spatial_shape: the input's spatial size (e.g. (32, 32)) the norm is taken on; needed
            only when the layer is built with unknown spatial dimensions.
        **kwargs: base layer arguments (`name`, ...). The other wrappers'
            `differentiable_power_iteration` and `vector_updates` are taken only at the
            values strict SN has, False and "in_call".

    Raises:
        ValueError: for a layer it cannot normalize, or `differentiable_power_iteration` or
            `vector_updates` at another value.

    Example:

    ```python
    layer = StrictSpectralNormalization(keras.layers.Conv2D(64, 4, 2, padding="same"))
    outputs = layer(np.zeros((2, 32, 32, 3)), training=True)
    layer.u_input.shape  # (1, 32, 32, 3): one vector over the whole input
    ```

    Reference:
        Lin, Sekar & Fanti, "Why Spectral Normalization Stabilizes GANs: Analysis and
        Improvements", NeurIPS 2021 (the "stricter" SN it discusses).
    """

    def __init__(self, layer: keras.layers.Layer, scale: float = 1.0,
                 power_iterations: int = 1, eps: float = 1e-12,
                 spatial_shape: tuple[int, ...] | None = None, **kwargs):
        for option, fixed in _FIXED_OPTIONS.items():
            given = kwargs.pop(option, fixed)
            if given != fixed:
                raise ValueError(
                    f"StrictSpectralNormalization has no `{option}` option (got {given!r}): "
                    "it advances its operator vector in every training call and holds it "
                    "constant in the gradient. Leave the option out, or normalize with "
                    "SpectralNormalization or BidirectionalSpectralNormalization, which have it.")
        super().__init__(layer, scale=scale, power_iterations=power_iterations, eps=eps,
                         **kwargs)
        self._operator = bool(self.layout.spatial_axes)
        if self._operator:
            _check_convolution(layer)
        self.spatial_shape = None if spatial_shape is None else tuple(
            int(size) for size in spatial_shape)

    def _num_views(self) -> int:
        # A convolution's operator vector replaces the matrix views (made in `build`).
        return 0 if self._operator else 1

    def build(self, input_shape=None):
        super().build(input_shape)
        if not self._operator:
            return
        grid, channels = self._input_grid(input_shape)
        layer = self.layer
        self._paddings = [
            axis_padding(size, kernel, stride, layer.padding, dilation)
            for size, kernel, stride, dilation in zip(grid, layer.kernel_size, layer.strides,
                                                      layer.dilation_rate)]
        # The transposed "valid" convolution must give back the full padded input.
        self._output_padding = tuple(
            (size + before + after - (kernel - 1) * dilation - 1) % stride
            for size, (before, after), kernel, stride, dilation in zip(
                grid, self._paddings, layer.kernel_size, layer.strides, layer.dilation_rate))
        # Same bookkeeping as the view vectors (see _NormalizedKernelWrapper.build).
        self.u_input = self.add_weight(
            name="u_input",
            shape=(1, *grid, channels),
            initializer=keras.initializers.RandomNormal(stddev=1.0),
            trainable=False,
            dtype="float32",
            autocast=False,
            aggregation="only_first_replica",
        )

    def _input_grid(self, input_shape) -> tuple[tuple[int, ...], int]:
        rank = len(self.layout.spatial_axes)
        channels_first = self.layer.data_format == "channels_first"
        spatial = tuple(input_shape[2:] if channels_first else input_shape[1:-1])
        channels = input_shape[1] if channels_first else input_shape[-1]
        grid = self.spatial_shape or spatial
        if len(grid) != rank or any(size is None for size in grid):
            raise ValueError(
                f"StrictSpectralNormalization of '{self.layer.name}' needs the input's "
                f"{rank} spatial sizes to fix the operator; got input shape {input_shape}"
                + (f" and spatial_shape {self.spatial_shape}" if self.spatial_shape else "")
                + ". Give `spatial_shape`, e.g. (32, 32).")
        return tuple(int(size) for size in grid), int(channels)

    @property
    def vectors(self) -> list[keras.Variable]:
        """The persistent power-iteration vector(s): `u_input` for a convolution."""
        return [self.u_input] if self._operator else super().vectors

    def _dilated(self, kernel):
        """The kernel with dilation_rate - 1 zeros between its taps: a dilation-1 convolution
        with it is the layer's dilated one (TensorFlow's CPU kernels refuse dilated
        transposed convolutions on some processors)."""
        for axis, rate in enumerate(self.layer.dilation_rate):
            if rate == 1:
                continue
            size = kernel.shape[axis]
            spaced = ops.stack([kernel] + [ops.zeros_like(kernel)] * (rate - 1), axis=axis + 1)
            shape = list(kernel.shape)
            shape[axis] = size * rate
            kernel = ops.reshape(spaced, shape)
            kernel = ops.take(kernel, ops.arange((size - 1) * rate + 1), axis=axis)
        return kernel

    def _forward(self, kernel, inputs):
        """The bias-free convolution of the layer, on channels-last inputs."""
        padded = ops.pad(inputs, [(0, 0), *self._paddings, (0, 0)])
        return ops.conv(padded, self._dilated(kernel), strides=self.layer.strides,
                        padding="valid", data_format="channels_last")

    def _adjoint(self, kernel, outputs):
        """The transpose of `_forward`: transposed valid convolution, then cropping the pad."""
        padded = ops.conv_transpose(outputs, self._dilated(kernel), strides=self.layer.strides,
                                    padding="valid", output_padding=self._output_padding,
                                    data_format="channels_last")
        starts = (0, *(before for before, _ in self._paddings), 0)
        return ops.slice(padded, starts, tuple(self.u_input.shape))

    def _advanced_input_vector(self, kernel):
        """The stored u after `power_iterations` steps u := normalize(A^T A u), no gradient."""
        fixed = ops.stop_gradient(kernel)
        u = self.u_input.value
        for _ in range(self.power_iterations):
            z = self._adjoint(fixed, self._forward(fixed, u))
            norm = ops.sqrt(ops.sum(ops.square(z)))
            # A zero kernel keeps the previous u: a zero u would never recover.
            u = ops.stop_gradient(ops.where(norm > self.eps, z / ops.maximum(norm, self.eps), u))
        return u

    def _operator_sigma(self, kernel, training: bool):
        if training:
            u = self._advanced_input_vector(kernel)
            self.u_input.assign(u)
        else:
            u = self.u_input.value
        outputs = self._forward(kernel, ops.stop_gradient(spectral.l2_normalize(u, self.eps)))
        # sigma = <v, A u> with v = Au / ||Au|| held constant: equal to ||A u||, with the SN
        # gradient v^T (dA) u and no NaN from a square root at a zero kernel.
        v = ops.stop_gradient(spectral.l2_normalize(outputs, self.eps))
        return ops.sum(v * outputs)

    def _view_sigmas(self, kernel, training: bool) -> list:
        if not self._operator:
            return super()._view_sigmas(kernel, training)
        return [self._operator_sigma(kernel, training)]

    def advance_vectors(self) -> None:
        """Advances the stored vector `power_iterations` times from the current kernel, as a
        training call does: `u_input` along the convolution operator, `u_view1` for a kernel
        without spatial axes. Training calls advance it already; this advances it outside
        them (e.g. to converge sigma before a measurement)."""
        if not self._operator:
            super().advance_vectors()
            return
        self.u_input.assign(self._advanced_input_vector(self._raw_kernel()))

    def get_config(self) -> dict:
        config = super().get_config()
        for option in _FIXED_OPTIONS:
            del config[option]
        config.update(spatial_shape=None if self.spatial_shape is None else list(
            self.spatial_shape))
        return config
