"""Backend-neutral gradient of a scalar function of one tensor, for the library tests."""

import keras
import numpy as np
from keras import ops


def gradient(function, value) -> np.ndarray:
    """d function(value) / d value as a float64 NumPy array, under the active Keras backend."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        value = tf.convert_to_tensor(value)
        with tf.GradientTape() as tape:
            tape.watch(value)
            result = function(value)
        return tape.gradient(result, value).numpy().astype(np.float64)
    if backend == "jax":
        import jax

        return np.asarray(jax.grad(function)(ops.convert_to_tensor(value)), np.float64)
    if backend == "torch":
        import torch

        value = ops.convert_to_tensor(value).detach().requires_grad_()
        (result,) = torch.autograd.grad(function(value), value)
        return result.cpu().numpy().astype(np.float64)
    raise NotImplementedError(f"No gradient helper for the {backend} backend.")
