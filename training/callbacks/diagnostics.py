"""The paper's quantities during training: gradient norms, sigmas and weight scales of D.

`DiagnosticsCallback` measures, on a fixed batch of real images and of generated ones (fixed
latents), what the paper's analysis is about: whether D's weight gradients explode or vanish,
the sigmas the normalization divides by, the scale of the weights the forward pass uses, and
the gradient of D with respect to its input.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from keras_bssn import collect_sigmas, spectral
from keras_bssn._keras_internals import flatten_layers
from keras_bssn.convert import normalized_layers
from training import losses
from training.callbacks.steps import generator_step

PREFIX = "diag/"


class DiagnosticsCallback(keras.callbacks.Callback):
    """Logs D's weight-gradient norms, sigmas, weight scales and input-gradient norms.

    Every `every_n_steps` generator steps (and once when training starts, at the step it
    starts from) the callback measures, for the GAN passed to `fit` (a `training.GAN`, or any
    model with `generator`, `discriminator`, `discriminator_logits`, `latent_dim`, `loss_name`
    and `step`):

    - `diag/weight_grad/<layer>`: the norm of the gradient of D's loss (the GAN's loss, averaged
      over `num_images` real and as many generated images; no gradient penalty) with respect
      to each layer's kernel W, the trained, unnormalized parameter;
    - `diag/sigma/<layer>[_view<i>]`: the sigmas of `keras_bssn.collect_sigmas`, the power
      iteration's estimates that normalized layers divide by;
    - `diag/sigma_exact/<layer>[_view<i>]`: the exact largest singular value (float64, on the
      host) of each matrix view of W (`keras_bssn.spectral.matrix_views`), `_view1` and
      `_view2` for kernels with spatial axes, no suffix for the others;
    - `diag/weight_std/<layer>` and `diag/var_over_lecun/<layer>`: the standard deviation of the
      kernel the forward pass uses (the effective kernel of a normalized layer), and its
      variance over LeCun's 1 / fan_in, where fan_in is the row count of view 1;
    - `diag/input_grad_{real,fake}_{mean,min,max}`: statistics of ||grad_x D(x)|| per image.

    The layers measured are D's layers of the kinds spectral normalization supports (Dense,
    EinsumDense, convolutions, depthwise and transposed convolutions, Embedding), wrapped or
    not; where each keeps its kernel, and how the kernel's axes make the matrix views, is
    `keras_bssn.spectral.kernel_layout`'s answer, as for the normalization itself.

    Nothing in the model changes: D runs as the losses see it (`GAN.discriminator_logits`:
    with explicit vector updates the look-ahead sigma, differentiated as training does, which
    stores nothing; otherwise the stored vectors, not advanced), and G in training mode, as in
    the discriminator step, but inside a `keras.StatelessScope` that discards its BatchNorm
    statistics updates. The real images and
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
        kernel_layers = _kernel_layers(discriminator)
        latents = np.random.default_rng(self.seed).standard_normal(
            (len(self.real_images), gan.latent_dim)).astype("float32")
        with keras.StatelessScope():  # BatchNorm's moving averages are not updated
            fake = gan.generator(latents, training=True)
        real = ops.convert_to_tensor(self.real_images)
        images = ops.concatenate([real, ops.cast(fake, real.dtype)], axis=0)
        with tf.GradientTape() as tape, tf.GradientTape() as input_tape:
            input_tape.watch(images)
            # The gradient training follows (through the power iteration where it does).
            logits = ops.cast(gan.discriminator_logits(images), "float32")
            real_loss, fake_loss = losses.discriminator_loss(gan.loss_name,
                                                             *ops.split(logits, 2, axis=0))
            loss = ops.mean(real_loss + fake_loss)
        gradients = tape.gradient(loss, [layer.kernel for layer in kernel_layers])
        # D has no batch coupling, so the gradient of the summed logits is per image.
        input_norms = ops.convert_to_numpy(_per_image_norms(input_tape.gradient(logits, images)))

        values = {f"weight_grad/{layer.name}": _norm(gradient)
                  for layer, gradient in zip(kernel_layers, gradients)}
        values.update({key: float(sigma) for key, sigma in collect_sigmas(discriminator).items()})
        for layer in kernel_layers:
            values.update(layer.measure())
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


@dataclasses.dataclass(frozen=True)
class _KernelLayer:
    """A layer of D with a kernel: its trained W, and the kernel its forward pass uses."""

    name: str
    layout: spectral.KernelLayout
    kernel: keras.Variable  # W, what the optimizer trains (a wrapper's inner variable)
    effective_kernel: Callable[[], object]  # scale * W / sigma for a wrapper, else W

    def measure(self) -> dict[str, float]:
        """`sigma_exact/...`, `weight_std/...` and `var_over_lecun/...` of this layer."""
        trained = np.asarray(ops.convert_to_numpy(self.kernel.value), np.float64)
        view_1, view_2 = spectral.exact_view_norms(trained, self.layout)
        if self.layout.has_second_view:
            values = {f"sigma_exact/{self.name}_view1": view_1,
                      f"sigma_exact/{self.name}_view2": view_2}
        else:
            values = {f"sigma_exact/{self.name}": view_1}
        effective = np.asarray(ops.convert_to_numpy(self.effective_kernel()), np.float64)
        # LeCun's fan_in is the input size of each output: the rows of view 1 (for a
        # depthwise kernel, the paper's view: spatial * in; for EinsumDense, its contracted
        # axes only).
        fan_in = self.layout.view_shapes(trained.shape)[0][0]
        variance = float(np.var(effective))
        values[f"weight_std/{self.name}"] = math.sqrt(variance)
        values[f"var_over_lecun/{self.name}"] = variance * fan_in
        return values


def _kernel_layers(discriminator: keras.Model) -> list[_KernelLayer]:
    """D's layers with a kernel, by layer name (the wrapper's name, if wrapped), in order."""
    wrappers = {id(wrapper): wrapper for wrapper in normalized_layers(discriminator)}
    found: list[_KernelLayer] = []
    seen = set()
    for layer in flatten_layers(discriminator, include_self=False):
        wrapper = wrappers.get(id(layer))
        if wrapper is not None:
            layout, owner = wrapper.layout, wrapper.layer
        else:
            try:
                layout, owner = spectral.kernel_layout(layer), layer
            except ValueError:  # no kernel SN could normalize: activations, pooling, BN, ...
                continue
        kernel = getattr(owner, layout.attribute, None)
        # A wrapped layer comes after its wrapper and holds the same variable; a layer with
        # LoRA or quantization computes its kernel instead of holding one.
        if not isinstance(kernel, keras.Variable) or id(kernel) in seen:
            continue
        seen.add(id(kernel))
        effective = (wrapper.effective_kernel if wrapper is not None
                     else lambda kernel=kernel: kernel.value)
        found.append(_KernelLayer(layer.name, layout, kernel, effective))
    return found


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
