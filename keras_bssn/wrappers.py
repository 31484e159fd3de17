"""SN, SSN, BSN and BSSN as Keras layer wrappers (the paper's reparameterization).

The wrapped layer's own kernel variable holds the unnormalized W, which the optimizer trains.
Every forward pass computes W_hat = scale * W / sigma(W) and runs the wrapped layer's own
`call` on W_hat (through a `keras.StatelessScope`, so no layer code is copied and nothing is
written back into the kernel). Gradients flow through sigma, with the power-iteration vectors
held constant.

Power-iteration vectors are non-trainable weights, saved with the model. A training call
(`training=True`) computes sigma with `power_iterations` iterations from the stored vectors;
any other call (inference, `predict`, `training=False`) computes sigma = ||M u|| from the
stored vectors. Every call normalizes.

When u advances (`vector_updates`):
- "in_call" (default, like PyTorch and Keras): every training call stores the advanced vectors.
  A GAN that calls its discriminator in training mode on real and fake batches separately
  advances u twice per discriminator step.
- "explicit" (the official BSN code): training calls compute sigma by looking ahead from the
  stored u without storing it; the caller advances u with `advance_vectors()` (or
  `keras_bssn.advance_power_iteration(model)`) after each optimizer step, from the updated W.

Which gradient sigma has (`differentiable_power_iteration`): False (default) holds u and v
constant (Miyato et al., PyTorch); True back-propagates through the iteration, as the official
BSN code does (see `spectral.power_iteration`).
"""

from __future__ import annotations

import math

import keras
from keras import ops

from keras_bssn import spectral
from keras_bssn._keras_internals import autocast_disabled

_PACKAGE = "keras_bssn"
VECTOR_UPDATES = ("in_call", "explicit")


class _NormalizedKernelWrapper(keras.layers.Wrapper):
    """Shared machinery: kernel lookup, vectors, the normalized forward pass, config."""

    def __init__(self, layer: keras.layers.Layer, scale: float = 1.0,
                 power_iterations: int = 1, eps: float = 1e-12,
                 differentiable_power_iteration: bool = False,
                 vector_updates: str = "in_call", **kwargs):
        # The wrapper reads the kernel in float32 for the power iteration; the wrapped layer
        # still autocasts the normalized kernel to its compute dtype under mixed precision.
        kwargs["autocast"] = False
        super().__init__(layer, **kwargs)
        if not (math.isfinite(float(scale)) and scale > 0):
            raise ValueError(f"`scale` must be a finite positive number, got {scale!r}.")
        if not isinstance(power_iterations, int) or power_iterations < 1:
            raise ValueError("`power_iterations` must be an integer >= 1, got "
                             f"{power_iterations!r}.")
        if not eps > 0:
            raise ValueError(f"`eps` must be a positive number, got {eps!r}.")
        if vector_updates not in VECTOR_UPDATES:
            raise ValueError(f"`vector_updates` must be one of {VECTOR_UPDATES}, got "
                             f"{vector_updates!r}.")
        if isinstance(layer, _NormalizedKernelWrapper):
            raise ValueError(f"Layer '{layer.name}' is already normalized "
                             f"({type(layer).__name__}); wrap the inner layer only once.")
        self.differentiable_power_iteration = bool(differentiable_power_iteration)
        self.vector_updates = vector_updates
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
        # Layer.__call__ opens a float16 autocast scope around a top-level mixed-precision
        # layer even with `autocast=False`; the power iteration must read the float32 kernel.
        with autocast_disabled(self):
            return ops.cast(self._kernel_variable().value, "float32")

    def _view_sigmas(self, kernel, training: bool) -> list:
        """One sigma per view; advances the stored vectors only when training."""
        views = spectral.matrix_views(kernel, self.layout)
        sigmas = []
        for view, vector in zip(views, self.vectors):
            if training:
                sigma, new_u = spectral.power_iteration(
                    view, vector.value, self.power_iterations, self.eps,
                    differentiable=self.differentiable_power_iteration)
                if self.vector_updates == "in_call":
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
        # Losses the wrapped layer adds in its call (activity regularizers, add_loss) are
        # collected by the scope and handed on, or they would be lost with it.
        with keras.StatelessScope(state_mapping=mapping, collect_losses=True) as scope:
            outputs = self.layer(inputs)
        for loss in scope.losses:
            self.add_loss(loss)
        return outputs

    def compute_output_shape(self, input_shape):
        return self.layer.compute_output_shape(input_shape)

    def advance_vectors(self) -> None:
        """Advances the stored vectors `power_iterations` times from the current kernel.

        With `vector_updates="explicit"`, call it after each optimizer step (the official BSN
        code advances u once per discriminator update, from the updated W).
        """
        views = spectral.matrix_views(self._raw_kernel(), self.layout)
        for view, vector in zip(views, self.vectors):
            _, new_u = spectral.power_iteration(view, vector.value, self.power_iterations,
                                                self.eps)
            vector.assign(new_u)

    def sigma_estimates(self) -> list:
        """The current sigma of each view from the stored vectors, without advancing them."""
        return self._view_sigmas(self._raw_kernel(), training=False)

    def effective_kernel(self):
        """scale * W / sigma: the kernel the forward pass uses (with the stored vectors)."""
        kernel = self._raw_kernel()
        return self._normalize(kernel, self._view_sigmas(kernel, training=False))

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(scale=self.scale, power_iterations=self.power_iterations, eps=self.eps,
                      differentiable_power_iteration=self.differentiable_power_iteration,
                      vector_updates=self.vector_updates)
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
    To train exactly as the official BSN code, pass `differentiable_power_iteration=True,
    vector_updates="explicit"` and call `advance_vectors()` after each optimizer step.

    Args:
        layer: the layer to normalize: Dense, EinsumDense, Conv1D/2D/3D,
            Conv1D/2D/3DTranspose, DepthwiseConv1D/2D or Embedding (or a subclass).
        scale: the constant c of SSN (1.0 gives SN).
        power_iterations: power-iteration steps per training call.
        eps: floor on norms and on sigma (a zero kernel gives zero outputs, not NaN).
        differentiable_power_iteration: back-propagate through the power iteration, as the
            official BSN code does (True), or hold u and v constant as Miyato et al. and
            PyTorch do (False).
        vector_updates: "in_call" stores the advanced u in every training call; "explicit"
            stores it only in `advance_vectors()` (the official code: once after each
            optimizer step).
        **kwargs: base layer arguments (`name`, ...).

    Example:

    ```python
    layer = SpectralNormalization(keras.layers.Conv2D(64, 3), scale=1.2)
    outputs = layer(np.zeros((2, 8, 8, 3)), training=True)  # shape (2, 6, 6, 64)
    sigma = layer.sigma_estimates()[0]  # the fan-in view's sigma, from the stored vector
    ```

    Reference:
        Miyato, Kataoka, Koyama & Yoshida, "Spectral Normalization for Generative Adversarial
        Networks", ICLR 2018.
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
        power_iterations: power-iteration steps per training call.
        eps: floor on norms and on sigma.
        differentiable_power_iteration: as in `SpectralNormalization`.
        vector_updates: as in `SpectralNormalization`.
        **kwargs: base layer arguments (`name`, ...).

    Example:

    ```python
    layer = BidirectionalSpectralNormalization(keras.layers.Conv2D(64, 3), scale=1.4)
    outputs = layer(np.zeros((2, 8, 8, 3)), training=True)
    sigma_view1, sigma_view2 = layer.sigma_estimates()
    ```

    Reference:
        Lin, Sekar & Fanti, "Why Spectral Normalization Stabilizes GANs: Analysis and
        Improvements", NeurIPS 2021 (arXiv 2009.02773).
    """

    def _num_views(self) -> int:
        return 2 if self.layout.has_second_view else 1
