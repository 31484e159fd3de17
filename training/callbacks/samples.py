"""PNG grids (and TensorBoard images) of the generator's samples at a fixed latent batch."""

from __future__ import annotations

import os
import sys

import keras
import numpy as np

from training.images import save_grid_png
from training.callbacks.steps import generator_step


def grid_latents(seed: int, num_images: int, latent_dim: int) -> np.ndarray:
    """The fixed latent batch of a run's sample grids (float32, standard normal).

    Drawn in float64 and cast, unlike `evaluation.sample_latents` (drawn in float32, other
    values): the grids of runs trained so far keep their latents.
    """
    rng = np.random.default_rng(seed)
    return rng.standard_normal((num_images, latent_dim)).astype("float32")


def to_uint8(images) -> np.ndarray:
    """Images in [-1, 1] to uint8 in [0, 255]."""
    images = np.asarray(keras.ops.convert_to_numpy(images), np.float32)
    return np.clip(np.rint((images + 1.0) * 127.5), 0, 255).astype(np.uint8)


# Grids before the first regular one, so that a new run shows samples within minutes.
EARLY_GRID_STEPS = (0, 100, 250, 500)


class SampleGridCallback(keras.callbacks.Callback):
    """Every `every_n_steps` generator steps, saves `samples/step_XXXXXXX.png`.

    The latent batch is fixed for the whole run (drawn from `seed`), so successive grids show
    the same latents as training goes on. Draws them with the generator that the GAN's
    `prepare_sampling_generator()` returns (its EMA copy when enabled), in inference mode.

    Args:
        out_dir: folder for the PNG files.
        every_n_steps: how often, in train steps; also at the end of training.
        early_steps: steps with a grid besides the multiples of `every_n_steps` (step 0:
            the untrained generator, before the first train step).
        num_images: grid size.
        seed: seed of the fixed latent batch.
        summary_writer: optional `tf.summary` writer for TensorBoard images.
    """

    def __init__(self, out_dir: str | os.PathLike, every_n_steps: int = 1000,
                 num_images: int = 64, seed: int = 0, summary_writer=None,
                 early_steps: tuple[int, ...] = EARLY_GRID_STEPS):
        super().__init__()
        self.out_dir = os.fspath(out_dir)
        self.every_n_steps = every_n_steps
        self.num_images = num_images
        self.seed = seed
        self.summary_writer = summary_writer
        self.early_steps = frozenset(early_steps)
        self._last_step = None

    def _latents(self) -> np.ndarray:
        return grid_latents(self.seed, self.num_images, self.model.latent_dim)

    def save(self, step: int) -> str | None:
        """Writes the grid for `step` and returns its path (None: the samples were not
        finite, a diverged generator, and no grid was written)."""
        generator = self.model.prepare_sampling_generator()
        self._last_step = step
        samples = generator.predict(self._latents(), verbose=0, batch_size=self.num_images)
        if not np.all(np.isfinite(samples)):
            print(f"warning: no sample grid at step {step}: the generator's samples are NaN "
                  "or infinite.", file=sys.stderr, flush=True)
            return None
        images = to_uint8(samples)
        path = os.path.join(self.out_dir, f"step_{step:07d}.png")
        save_grid_png(images, path)
        if self.summary_writer is not None:
            import tensorflow as tf

            with self.summary_writer.as_default(step=step):
                tf.summary.image("samples", images[:16], max_outputs=16)
        return path

    def _due(self, step: int) -> bool:
        return step != self._last_step and (step % self.every_n_steps == 0
                                            or step in self.early_steps)

    def on_train_begin(self, logs=None):
        step = generator_step(self.model)
        if step == 0 and self._due(step):
            self.save(step)

    def on_train_batch_end(self, batch, logs=None):
        step = generator_step(self.model)
        if self._due(step):
            self.save(step)

    def on_train_end(self, logs=None):
        step = generator_step(self.model)
        if step != self._last_step:
            self.save(step)
