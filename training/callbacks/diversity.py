"""Sample diversity: mode collapse seen at the log row where it happens, not a grid later."""

from __future__ import annotations

import math
import sys
from collections.abc import Iterable, Mapping

import keras
import numpy as np

from training.callbacks.samples import grid_latents
from training.callbacks.steps import generator_step

# A collapsed generator draws nearly one image for every latent: its diversity falls to a few
# hundredths of a real batch's. The README's seed study gives the numbers behind these values.
DIVERSITY_THRESHOLD = 0.25
DIVERSITY_PATIENCE = 3
DIVERSITY_WARM_UP_STEPS = 500


def mean_pairwise_distance(images: np.ndarray) -> float:
    """The mean Euclidean distance between two different images of a batch (float64).

    Example:

    >>> mean_pairwise_distance(np.stack([np.zeros((2, 2, 3)), np.ones((2, 2, 3))]))
    3.4641016151377544
    """
    flat = np.asarray(images, np.float64).reshape(len(images), -1)
    if len(flat) < 2:
        raise ValueError(f"Need at least 2 images for a pairwise distance, got {len(flat)}.")
    squared = np.sum(flat**2, axis=1)
    distances = np.sqrt(np.maximum(squared[:, None] + squared[None, :] - 2 * flat @ flat.T, 0))
    upper = np.triu_indices(len(flat), k=1)
    return float(np.mean(distances[upper]))


class SampleDiversityMonitor(keras.callbacks.Callback):
    """Logs `diversity` at every log row and warns once when it stays low (mode collapse).

    `diversity` is the mean pairwise distance between the images that the GAN's sampling
    generator (`prepare_sampling_generator()`) draws, in inference mode (as the sample grids
    and the official code's samples are drawn), from a fixed latent batch, divided by the same
    statistic of a fixed batch of real images: about 1 for samples as varied as the data, near
    0 when every latent gives the same image. It goes to the epoch logs (so `CSVLogger` and
    TensorBoard loggers listed after this callback record it).

    The warning: once the generator has taken `warm_up_steps` steps (an untrained generator
    draws nearly flat images), a diversity below `threshold` at `patience` log rows in a row
    prints one line on stderr naming the step. A resumed run passes the rows it logged up
    to its checkpoint as `logged_rows`, so a streak that an interruption cut in two still
    counts (the warning then comes at the first new row that completes or continues it).

    Args:
        real_images: real images in [-1, 1], at least 2; all of them are used.
        num_samples: latent vectors in the fixed batch.
        seed: seed of the fixed latent batch.
        threshold: diversity under which a row counts as collapsed.
        patience: collapsed rows in a row before the warning.
        warm_up_steps: generator steps before rows count.
        logged_rows: earlier rows of this run, oldest first, each with a `step` and a
            `diversity` (rows without a finite diversity, like the one an interrupted
            interval writes, are skipped).

    Example:

    >>> monitor = SampleDiversityMonitor(np.eye(4).reshape(4, 2, 2, 1), logged_rows=[
    ...     {"step": 500, "diversity": 0.1}, {"step": 550, "diversity": 0.05}])
    >>> monitor.low_rows
    2
    """

    def __init__(self, real_images: np.ndarray, num_samples: int = 64, seed: int = 0,
                 threshold: float = DIVERSITY_THRESHOLD, patience: int = DIVERSITY_PATIENCE,
                 warm_up_steps: int = DIVERSITY_WARM_UP_STEPS,
                 logged_rows: Iterable[Mapping[str, float]] = ()):
        super().__init__()
        self.real_diversity = mean_pairwise_distance(real_images)
        if not self.real_diversity > 0:
            raise ValueError("The real images for the diversity statistic are all identical.")
        self.num_samples = num_samples
        self.seed = seed
        self.threshold = threshold
        self.patience = patience
        self.warm_up_steps = warm_up_steps
        self.low_rows = 0
        self.warned = False
        for row in logged_rows:
            if math.isfinite(row.get("diversity", math.nan)):
                self._count(int(row["step"]), row["diversity"])

    def diversity(self) -> float:
        """The current diversity of the fixed latent batch, relative to the real batch."""
        latents = grid_latents(self.seed, self.num_samples, self.model.latent_dim)
        images = self.model.prepare_sampling_generator().predict(
            latents, verbose=0, batch_size=self.num_samples)
        return mean_pairwise_distance(images) / self.real_diversity

    def on_epoch_end(self, epoch, logs=None):
        value = self.diversity()
        if logs is not None:
            logs["diversity"] = value
        step = generator_step(self.model)
        if self._count(step, value) and not self.warned:
            self.warned = True
            print(f"warning: step {step}: sample diversity {value:.3f} of a real batch's, below "
                  f"{self.threshold} for {self.low_rows} log rows in a row: the generator has "
                  "probably collapsed (every latent draws nearly the same image). See the "
                  "samples/ grids and the README's section on collapse.", file=sys.stderr,
                  flush=True)

    def _count(self, step: int, value: float) -> bool:
        """Counts one row into the streak of low rows; True once the streak is long enough."""
        if step >= self.warm_up_steps:
            self.low_rows = self.low_rows + 1 if value < self.threshold else 0
        return self.low_rows >= self.patience
