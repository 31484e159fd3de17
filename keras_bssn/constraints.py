"""SN and BSN as Keras weight constraints: a projection W <- c W / sigma after each update.

The wrappers (`keras_bssn.SpectralNormalization`, ...) implement the paper's
reparameterization: the trained variable is the unnormalized W and the gradient flows through
sigma. A constraint instead *projects* the variable after every optimizer step, so the gradient
ignores the normalization and the stored kernel is already normalized: plain layers at
inference, nothing to unwrap. Pick the wrapper to reproduce the paper; pick a constraint for
projection semantics.

Each constraint keeps one power-iteration vector per view for each variable it constrains,
created on the first projection. These vectors live in the constraint object, not in the
model's weights: after a model is reloaded they restart from random and re-converge over the
next steps (raise `power_iterations` to converge faster).

Backends: the TensorFlow backend only. Its optimizer applies constraints with stateful ops,
so the vectors can be created and advanced there; JAX's (and others') stateless training
steps would drop those updates. Elsewhere a constraint refuses with an error that points to
the wrappers, which keep their vectors as layer weights and work on every backend.
"""

from __future__ import annotations

import math
import weakref

import keras
from keras import ops

from keras_bssn import spectral

_PACKAGE = "keras_bssn"


class _ProjectionConstraint(keras.constraints.Constraint):
    """Projects a kernel to c W / sigma with persistent power-iteration vectors."""

    def __init__(self, scale: float = 1.0, power_iterations: int = 1, eps: float = 1e-12,
                 transposed: bool = False):
        if not (math.isfinite(float(scale)) and scale > 0):
            raise ValueError(f"`scale` must be a finite positive number, got {scale!r}.")
        if not isinstance(power_iterations, int) or power_iterations < 1:
            raise ValueError("`power_iterations` must be an integer >= 1, got "
                             f"{power_iterations!r}.")
        self.scale = float(scale)
        self.power_iterations = power_iterations
        self.eps = float(eps)
        self.transposed = bool(transposed)
        # id(variable) -> (weak reference to it, its vectors): ids are reused once a variable
        # is garbage-collected, so an entry counts only while its variable is alive.
        self._vectors: dict[int, tuple[weakref.ref, list[keras.Variable]]] = {}

    def _num_views(self, layout: spectral.KernelLayout) -> int:
        raise NotImplementedError

    def _layout(self, rank: int) -> spectral.KernelLayout:
        if rank < 2:
            raise ValueError(f"{type(self).__name__} constrains kernels of rank >= 2, got a "
                             f"kernel of rank {rank}. Use it as a `kernel_constraint`.")
        return spectral.layout_for_kernel(rank, self.transposed)

    def _vectors_for(self, w, layout: spectral.KernelLayout) -> list[keras.Variable]:
        # One constraint object may serve several layers: vectors per constrained variable.
        owner, vectors = self._vectors.get(id(w), (None, None))
        if owner is None or owner() is not w:
            shapes = layout.view_shapes(tuple(w.shape))[: self._num_views(layout)]
            vectors = [
                keras.Variable(keras.random.normal((1, cols)), trainable=False,
                               dtype="float32", name=f"constraint_u_view{index + 1}")
                for index, (_, cols) in enumerate(shapes)
            ]
            self._vectors[id(w)] = (weakref.ref(w), vectors)
        return vectors

    def __call__(self, w):
        backend = keras.backend.backend()
        if backend != "tensorflow":
            raise NotImplementedError(
                f"{type(self).__name__} keeps its power-iteration vectors in the constraint, "
                f"which only the TensorFlow backend's optimizer can update; the {backend} "
                "backend would drop those updates. Use the wrappers instead "
                "(keras_bssn.SpectralNormalization / BidirectionalSpectralNormalization), "
                "which keep their vectors as layer weights and work on every backend.")
        layout = self._layout(len(w.shape))
        kernel = ops.cast(w, "float32")
        sigmas = []
        for view, vector in zip(spectral.matrix_views(kernel, layout),
                                self._vectors_for(w, layout)):
            sigma, new_u = spectral.power_iteration(view, vector.value, self.power_iterations,
                                                    self.eps)
            vector.assign(new_u)
            sigmas.append(sigma)
        sigma = ops.mean(ops.stack(sigmas))
        return ops.cast(kernel * (self.scale / ops.maximum(sigma, self.eps)), w.dtype)

    def get_config(self) -> dict:
        return {"scale": self.scale, "power_iterations": self.power_iterations,
                "eps": self.eps, "transposed": self.transposed}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class SpectralNorm(_ProjectionConstraint):
    """Constrains a kernel to spectral norm `scale` (view 1): W <- scale * W / sigma(M1).

    TensorFlow backend only (see the module's documentation); elsewhere the first projection
    raises `NotImplementedError` pointing to `keras_bssn.SpectralNormalization`.

    Args:
        scale: the target spectral norm c (SSN when != 1).
        power_iterations: power-iteration steps per projection.
        eps: floor on sigma.
        transposed: set for Conv*Transpose kernels, laid out (..., out, in) in Keras.

    Example:

    ```python
    layer = keras.layers.Dense(64, kernel_constraint=SpectralNorm(scale=1.0))
    ```
    """

    def _num_views(self, layout: spectral.KernelLayout) -> int:
        return 1


@keras.saving.register_keras_serializable(package=_PACKAGE)
class BidirectionalSpectralNorm(_ProjectionConstraint):
    """Constrains a kernel with BSN: W <- scale * W / ((sigma(M1) + sigma(M2)) / 2).

    TensorFlow backend only, like `SpectralNorm`.

    Args:
        scale: the constant c (BSSN when != 1).
        power_iterations: power-iteration steps per projection, per view.
        eps: floor on sigma.
        transposed: set for Conv*Transpose kernels, laid out (..., out, in) in Keras.

    Example:

    ```python
    layer = keras.layers.Conv2D(64, 3, kernel_constraint=BidirectionalSpectralNorm(1.4))
    ```
    """

    def _num_views(self, layout: spectral.KernelLayout) -> int:
        return 2 if layout.has_second_view else 1
