"""SN, SSN, BSN and BSSN as Keras layer wrappers (the paper's reparameterization).

The wrapped layer's own kernel variable holds the unnormalized W, which the optimizer trains.
Every forward pass computes W_hat = scale * W / sigma(W) and runs the wrapped layer's own
`call` on W_hat (through a `keras.StatelessScope`, so no layer code is copied and nothing is
written back into the kernel). Gradients flow through sigma, with the power-iteration vectors
held constant.

Power-iteration vectors are non-trainable weights, saved with the model. A call with
`training=True` advances them `power_iterations` times; any other call (inference, `predict`,
`training=False`) uses the stored vectors and leaves them alone, but still normalizes.

How often u advances: once per training call of the wrapper. A GAN that calls its
discriminator on real and fake batches separately in training mode advances u twice per
discriminator step; the reference advanced it once, which `training.GAN` reproduces by calling
the discriminator once on the concatenated batch (and with `training=False` in the generator
step).
"""

from __future__ import annotations

import keras
from keras import ops

# Not public: Layer.__call__ enters a float16 autocast scope around a top-level mixed-precision
# layer even when its `autocast` is False, and the power iteration must read the float32 kernel.
from keras.src.backend import AutocastScope

from keras_bssn import spectral

_PACKAGE = "keras_bssn"


class _NormalizedKernelWrapper(keras.layers.Wrapper):
    """Shared machinery: kernel lookup, vectors, the normalized forward pass, config."""

    def __init__(self, layer: keras.layers.Layer, scale: float = 1.0,
                 power_iterations: int = 1, eps: float = 1e-12, **kwargs):
        # The wrapper reads the kernel in float32 for the power iteration; the wrapped layer
        # still autocasts the normalized kernel to its compute dtype under mixed precision.
        kwargs["autocast"] = False
        super().__init__(layer, **kwargs)
        if not scale > 0:
            raise ValueError(f"`scale` must be a positive number, got {scale!r}.")
        if not isinstance(power_iterations, int) or power_iterations < 1:
            raise ValueError("`power_iterations` must be an integer >= 1, got "
                             f"{power_iterations!r}.")
        if not eps > 0:
            raise ValueError(f"`eps` must be a positive number, got {eps!r}.")
        self.scale = float(scale)
        self.power_iterations = power_iterations
        self.eps = float(eps)
        self.layout = spectral.kernel_layout(layer)

    def _num_views(self) -> int:
        raise NotImplementedError

    def build(self, input_shape=None):
        super().build(input_shape)
        kernel_shape = tuple(self._kernel_variable().shape)
        view_shapes = self.layout.view_shapes(kernel_shape)[: self._num_views()]
        # ONLY_FIRST_REPLICA: every replica computes the same u from the same mirrored kernel;
        # taking the first replica's value keeps the copies bit-identical without an all-reduce.
        # One attribute per vector (not a list) so that tf.train.Checkpoint tracks them too.
        for index, (_, cols) in enumerate(view_shapes):
            name = f"u_view{index + 1}"
            setattr(self, name, self.add_weight(
                name=name,
                shape=(1, cols),
                initializer=keras.initializers.RandomNormal(stddev=1.0),
                trainable=False,
                dtype="float32",
                autocast=False,
                aggregation="only_first_replica",
            ))
        self._num_vectors = len(view_shapes)

    @property
    def vectors(self) -> list[keras.Variable]:
        """The persistent power-iteration vectors u, one per view (non-trainable weights)."""
        return [getattr(self, f"u_view{index + 1}") for index in range(self._num_vectors)]

    def _kernel_variable(self) -> keras.Variable:
        variable = getattr(self.layer, self.layout.attribute)
        if not isinstance(variable, keras.Variable):
            raise ValueError(
                f"Layer '{self.layer.name}' computes its {self.layout.attribute} instead of "
                "storing it in one variable (LoRA or quantization enabled?), so it cannot be "
                "spectrally normalized. Normalize the layer before enabling LoRA/quantization."
            )
        return variable

    def _raw_kernel(self):
        with AutocastScope(None):
            return ops.cast(self._kernel_variable().value, "float32")

    def _view_sigmas(self, kernel, training: bool) -> list:
        """One sigma per view; advances the stored vectors only when training."""
        views = spectral.matrix_views(kernel, self.layout)
        sigmas = []
        for view, vector in zip(views, self.vectors):
            if training:
                sigma, new_u = spectral.power_iteration(
                    view, vector.value, self.power_iterations, self.eps)
                vector.assign(new_u)
            else:
                sigma = spectral.sigma_from_vector(view, vector.value, self.eps)
            sigmas.append(sigma)
        return sigmas

    def _normalize(self, kernel, sigmas: list):
        # Dividing by the mean of the views' sigmas is BSN; with one view it is plain SN.
        sigma = ops.mean(ops.stack(sigmas))
        return kernel * (self.scale / ops.maximum(sigma, self.eps))

    def call(self, inputs, training=None):
        kernel_variable = self._kernel_variable()
        kernel = self._raw_kernel()
        normalized = self._normalize(kernel, self._view_sigmas(kernel, bool(training)))
        mapping = [(weight, normalized if weight is kernel_variable else weight.value)
                   for weight in self.layer.weights]
        with keras.StatelessScope(state_mapping=mapping):
            return self.layer(inputs)

    def compute_output_shape(self, input_shape):
        return self.layer.compute_output_shape(input_shape)

    def sigma_estimates(self) -> list:
        """The current sigma of each view from the stored vectors, without advancing them."""
        return self._view_sigmas(self._raw_kernel(), training=False)

    def effective_kernel(self):
        """scale * W / sigma: the kernel the forward pass uses (with the stored vectors)."""
        kernel = self._raw_kernel()
        return self._normalize(kernel, self._view_sigmas(kernel, training=False))

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(scale=self.scale, power_iterations=self.power_iterations, eps=self.eps)
        return config


@keras.saving.register_keras_serializable(package=_PACKAGE)
class SpectralNormalization(_NormalizedKernelWrapper):
    """Spectral normalization (SN), and scaled SN (SSN) when `scale != 1`.

    The forward pass uses W_hat = scale * W / sigma(M1), where M1 is the kernel's fan-in view
    (shape (prod(spatial) * in, out)) and sigma its largest singular value, estimated by power
    iteration with a persistent vector u. For transposed convolutions (Keras kernel
    (..., out, in)) view 1 still puts the output-channel axis last, as PyTorch does with dim=1.

    Unlike `keras.layers.SpectralNormalization`, the wrapper normalizes in every call (training
    and inference alike), never writes into the kernel, and back-propagates through sigma.

    Args:
        layer: the layer to normalize: Dense, EinsumDense, Conv1D/2D/3D,
            Conv1D/2D/3DTranspose, DepthwiseConv1D/2D or Embedding (or a subclass).
        scale: the constant c of SSN (1.0 gives SN).
        power_iterations: how many times u advances per training call.
        eps: floor on norms and on sigma (a zero kernel gives zero outputs, not NaN).
        **kwargs: base layer arguments (`name`, ...).

    Example:

    >>> layer = SpectralNormalization(keras.layers.Conv2D(64, 3), scale=1.2)
    >>> outputs = layer(np.zeros((2, 8, 8, 3)), training=True)
    >>> outputs.shape
    TensorShape([2, 6, 6, 64])
    """

    def _num_views(self) -> int:
        return 1


@keras.saving.register_keras_serializable(package=_PACKAGE)
class BidirectionalSpectralNormalization(_NormalizedKernelWrapper):
    """Bidirectional SN (BSN), and bidirectional scaled SN (BSSN) when `scale != 1`.

    The forward pass uses W_hat = scale * W / ((sigma(M1) + sigma(M2)) / 2), where M1 is the
    fan-in view (prod(spatial) * in, out) and M2 the fan-out view (prod(spatial) * out, in), each
    with its own persistent power-iteration vector. Kernels without spatial axes (Dense,
    Embedding, EinsumDense) have a single distinct view, so BSN equals SN there.

    Args:
        layer: the layer to normalize (the kinds `SpectralNormalization` takes).
        scale: the constant c of BSSN (1.0 gives BSN).
        power_iterations: how many times each vector advances per training call.
        eps: floor on norms and on sigma.
        **kwargs: base layer arguments (`name`, ...).

    Example:

    >>> layer = BidirectionalSpectralNormalization(keras.layers.Conv2D(64, 3), scale=1.4)
    >>> outputs = layer(np.zeros((2, 8, 8, 3)), training=True)
    >>> [float(s) > 0 for s in layer.sigma_estimates()]
    [True, True]
    """

    def _num_views(self) -> int:
        return 2 if self.layout.has_second_view else 1
