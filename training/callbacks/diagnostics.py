"""The paper's quantities during training: gradient norms, sigmas and weight scales of D.

`DiagnosticsCallback` measures, on a fixed batch of real images and of generated ones (fixed
latents), what the paper's analysis is about: whether D's weight gradients explode or vanish,
the sigmas the normalization divides by, the scale of the weights the forward pass uses, and
the gradient of D with respect to its input.
"""

from __future__ import annotations

import math

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from keras_bssn import collect_sigmas
from keras_bssn.convert import normalized_layers
from keras_bssn.diagnostics import weight_variance_table
from training import losses
from training.callbacks.steps import generator_step

PREFIX = "diag/"


class DiagnosticsCallback(keras.callbacks.Callback):
    """Logs D's weight-gradient norms, sigmas, weight scales and input-gradient norms.

    Every `every_n_steps` generator steps (and once when training starts, at the step it
    starts from) the callback measures, for the GAN passed to `fit` (a `training.GAN`, or any
    model with `generator`, `discriminator`, `latent_dim`, `loss_name` and `g_optimizer`):

    - `diag/weight_grad/<layer>`: the norm of the gradient of D's loss (the GAN's loss, averaged
      over `num_images` real and as many generated images; no gradient penalty) with respect
      to each layer's kernel W, the trained, unnormalized parameter;
    - `diag/sigma/<layer>[_view<i>]`: the sigmas of `keras_bssn.collect_sigmas`;
    - `diag/weight_std/<layer>` and `diag/var_over_lecun/<layer>`: the standard deviation of the
      kernel the forward pass uses (the effective kernel of a normalized layer), and its
      variance over LeCun's 1 / fan_in;
    - `diag/input_grad_{real,fake}_{mean,min,max}`: statistics of ||grad_x D(x)|| per image.

    Nothing in the model changes: D runs in inference mode (the stored power-iteration
    vectors, not advanced), and G in training mode, as in the discriminator step, but inside a
    `keras.StatelessScope` that discards its BatchNorm statistics updates. The real images and
    latents are the same at every measurement, so the values move only with the weights.

    Logging: every measurement goes to `history` (dicts with `step` and the values) and, if
    given, to `summary_writer` at its generator step. The epoch logs (what `CSVLogger`,
    `TensorBoard` and `History` record) get every key at every epoch end: the values of the
    last measurement within that epoch, NaN in epochs without one, because `CSVLogger` fixes its
    columns at the first epoch. List this callback before those loggers.

    Args:
        every_n_steps: generator steps between measurements.
        real_images: real images in [-1, 1], an array or a `tf.data.Dataset` (batched or
            not); the first `num_images` are used.
        num_images: real images per measurement (and as many generated ones).
        seed: seed of the latents of the generated images.
        summary_writer: optional `tf.summary` writer.

    Example:

    ```python
    diagnostics = DiagnosticsCallback(100, real_images=dataset, num_images=64)
    gan.fit(dataset, steps_per_epoch=100, epochs=50,
            callbacks=[diagnostics, keras.callbacks.CSVLogger("metrics.csv")])
    ```
    """

    def __init__(self, every_n_steps: int, real_images: tf.data.Dataset | np.ndarray,
                 num_images: int = 64, seed: int = 0, summary_writer=None):
        super().__init__()
        if every_n_steps < 1:
            raise ValueError(f"every_n_steps must be >= 1; got {every_n_steps}.")
        self.every_n_steps = every_n_steps
        self.real_images = _first_images(real_images, num_images)
        self.seed = seed
        self.summary_writer = summary_writer
        self.history: list[dict[str, float]] = []
        self._keys: list[str] = []
        self._epoch_values: dict[str, float] | None = None
        self._last_step = 0

    def evaluate(self) -> dict[str, float]:
        """Measures the model now; records the values in `history` and the summary writer."""
        gan = self.model
        step = generator_step(gan)
        values = {PREFIX + key: value for key, value in self._measure(gan).items()}
        self._keys = self._keys or list(values)
        self._epoch_values = values
        self._last_step = step
        self.history.append({"step": step, **values})
        if self.summary_writer is not None:
            with self.summary_writer.as_default(step=step):
                for name, value in values.items():
                    tf.summary.scalar(name, value)
            self.summary_writer.flush()
        return values

    def _measure(self, gan) -> dict[str, float]:
        discriminator = gan.discriminator
        kernels = _discriminator_kernels(discriminator)
        latents = np.random.default_rng(self.seed).standard_normal(
            (len(self.real_images), gan.latent_dim)).astype("float32")
        with keras.StatelessScope():  # BatchNorm's moving averages are not updated
            fake = gan.generator(latents, training=True)
        real = ops.convert_to_tensor(self.real_images)
        images = ops.concatenate([real, ops.cast(fake, real.dtype)], axis=0)
        with tf.GradientTape() as tape, tf.GradientTape() as input_tape:
            input_tape.watch(images)
            logits = ops.cast(discriminator(images, training=False), "float32")
            real_loss, fake_loss = losses.discriminator_loss(gan.loss_name,
                                                             *ops.split(logits, 2, axis=0))
            loss = ops.mean(real_loss + fake_loss)
        gradients = tape.gradient(loss, list(kernels.values()))
        # D has no batch coupling, so the gradient of the summed logits is per image.
        input_norms = ops.convert_to_numpy(_per_image_norms(input_tape.gradient(logits, images)))

        values = {f"weight_grad/{name}": _norm(gradient)
                  for name, gradient in zip(kernels, gradients)}
        values.update({key: float(sigma) for key, sigma in collect_sigmas(discriminator).items()})
        for row in weight_variance_table(discriminator):
            values[f"weight_std/{row.name}"] = math.sqrt(row.var)
            values[f"var_over_lecun/{row.name}"] = row.var_over_lecun
        for kind, norms in zip(("real", "fake"), np.split(input_norms, 2)):
            values.update({f"input_grad_{kind}_mean": float(norms.mean()),
                           f"input_grad_{kind}_min": float(norms.min()),
                           f"input_grad_{kind}_max": float(norms.max())})
        return values

    def on_train_begin(self, logs: dict | None = None) -> None:
        # The starting point (step 0: initialization), which also fixes the logged keys.
        self.evaluate()

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._epoch_values = None

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        step = generator_step(self.model)
        # With `steps_per_execution` > 1 not every step is seen: measure once a multiple of N
        # has been passed, not only when it is hit.
        if step // self.every_n_steps > self._last_step // self.every_n_steps:
            self.evaluate()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if logs is not None:
            logs.update(self._epoch_values or dict.fromkeys(self._keys, float("nan")))


def _discriminator_kernels(discriminator: keras.Model) -> dict[str, keras.Variable]:
    """Each kernel layer's trained kernel variable, by layer name (the wrapper's, if wrapped)."""
    wrappers = {id(wrapper): wrapper for wrapper in normalized_layers(discriminator)}
    kernels: dict[str, keras.Variable] = {}
    seen = set()
    for layer in discriminator._flatten_layers(include_self=False):
        wrapper = wrappers.get(id(layer))
        kernel = (getattr(wrapper.layer, wrapper.layout.attribute) if wrapper
                  else getattr(layer, "kernel", None))
        # A wrapped layer comes after its wrapper and holds the same variable.
        if isinstance(kernel, keras.Variable) and id(kernel) not in seen:
            seen.add(id(kernel))
            kernels[layer.name] = kernel
    return kernels


def _first_images(real_images: tf.data.Dataset | np.ndarray, num_images: int) -> np.ndarray:
    if isinstance(real_images, tf.data.Dataset):
        if real_images.element_spec.shape.rank == 4:
            real_images = real_images.unbatch()
        real_images = np.array(list(real_images.take(num_images).as_numpy_iterator()))
    images = np.asarray(real_images, np.float32)[:num_images]
    if len(images) < num_images:
        raise ValueError(f"DiagnosticsCallback needs {num_images} real images; got "
                         f"{len(images)}.")
    return images


def _per_image_norms(gradients):
    squares = ops.square(ops.cast(gradients, "float32"))
    return ops.sqrt(ops.sum(ops.reshape(squares, (ops.shape(squares)[0], -1)), axis=1))


def _norm(tensor) -> float:
    return float(ops.sqrt(ops.sum(ops.square(ops.cast(tensor, "float32")))))
