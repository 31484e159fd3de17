"""Sample artifacts: how much of what a generator draws is one pattern, at the same place in
every image, whatever the latent, and whether the inference-mode BatchNorm statistics cause it.

`shared_pattern_share` measures it: the fine detail of each image (the image minus its 3x3
box blur), and the share of its energy that is common to all images (the energy of the mean
detail over the mean energy of one image's detail). Independent images give about 1/N for N
images; the same pattern in every image gives up to 1. `lattice_power_share` says where that
common detail lies: the share of its power at the frequencies of a lattice of period P pixels
(P = 8 for three stride-2 upsamplings, as in the CNN generator: the phase grid of its
transposed convolutions), against about 1/P^2 for a pattern without that structure.

`run` restores a run's generator at several checkpoints (step 0: as initialized), draws the
run's grid latents in both BatchNorm modes (`inference`: the moving statistics, as the sample
grids and FID see it; `training`: the batch's own statistics), measures each, and writes
`artifacts.csv`, a grid per step and mode, and the same measures of a real batch. Each row also
has the sample diversity the training logs (mean pairwise distance relative to its reference
batch, the first training images), so a collapse can be told from an artifact of the
inference-mode statistics. The real row measures the next training images, so its diversity
says what "as varied as the data" is: about 1, not 1 by construction.
"""

from __future__ import annotations

import pathlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from training.building import gan_at_step
from training.callbacks.diversity import mean_pairwise_distance
from training.callbacks.samples import grid_latents, to_uint8
from training.callbacks.checkpoints import checkpoint_steps
from training.errors import DataError, RunFolderError, UsageError
from training.experiments import reporting
from training.images import save_grid_png
from training.runs import saved_config
from training.trainer import training_images

if TYPE_CHECKING:
    from matplotlib.figure import Figure

COLUMNS = ("step", "mode", "shared_share", "lattice_share", "diversity", "num_images")
MODES = ("inference", "training")


def shared_pattern_share(images: np.ndarray) -> float:
    """The share of the images' fine detail (image minus 3x3 box blur) common to all of them.

    Example:

    >>> pattern = np.random.default_rng(0).standard_normal((1, 8, 8, 3))
    >>> round(shared_pattern_share(np.repeat(pattern, 16, axis=0)), 6)
    1.0
    """
    detail = _fine_detail(images)
    energy = np.mean(np.sum(detail ** 2, axis=(1, 2, 3)))
    return float(np.sum(detail.mean(axis=0) ** 2) / energy) if energy > 0 else 0.0


def lattice_power_share(images: np.ndarray, period: int) -> float:
    """The share of the power of the images' common fine detail (their mean detail) at the
    frequencies of a lattice of `period` pixels (whole multiples of size/period cycles on both
    axes, the constant left out).

    Example:

    >>> rows = np.arange(16)[:, None] % 8 == 4
    >>> lattice = np.repeat((rows & rows.T)[None, :, :, None], 4, axis=0).astype(float)
    >>> round(lattice_power_share(lattice, 8), 6)
    1.0
    """
    common = _fine_detail(images).mean(axis=0)
    height, width = common.shape[:2]
    power = np.sum(np.abs(np.fft.fft2(common, axes=(0, 1))) ** 2, axis=-1)
    on_lattice = np.zeros((height, width), bool)
    on_lattice[::max(height // period, 1), ::max(width // period, 1)] = True
    on_lattice[0, 0] = False
    total = power.sum() - power[0, 0]
    return min(float(power[on_lattice].sum() / total), 1.0) if total > 0 else 0.0


def _fine_detail(images: np.ndarray) -> np.ndarray:
    """Each image minus its 3x3 box blur (edges repeated)."""
    images = np.asarray(images, np.float64)
    height, width = images.shape[1:3]
    padded = np.pad(images, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
    blurred = sum(padded[:, row:row + height, column:column + width]
                  for row in range(3) for column in range(3)) / 9.0
    return images - blurred


def check_settings(run_dir: pathlib.Path, steps: Sequence[int], lattice_period: int) -> None:
    """Checks, before anything is loaded, that `run_dir` holds a run with a checkpoint of
    each of `steps` (0 needs none) and that `lattice_period` fits its images.

    Raises:
        RunFolderError: no run, or a checkpoint is missing.
        UsageError: the period does not divide the images' side.
    """
    image_size = saved_config(run_dir).image_size
    kept = checkpoint_steps(run_dir / "checkpoints")
    missing = [str(step) for step in steps if step and step not in kept]
    if missing:
        raise RunFolderError(f"{run_dir} has no checkpoint of step {', '.join(missing)}; it "
                             f"keeps steps {sorted(kept) or 'none'}. Give those (or 0).")
    if lattice_period < 2 or image_size % lattice_period:
        raise UsageError(f"--lattice-period {lattice_period} does not fit the run's "
                         f"{image_size}x{image_size} images: give a period from 2 to "
                         f"{image_size} that divides {image_size} (8 for three stride-2 "
                         "upsamplings).")


def run(out: pathlib.Path, run_dir: pathlib.Path, steps: Sequence[int],
        num_images: int = 64, lattice_period: int = 8) -> list[dict[str, Any]]:
    """Measures the run's generator at each of `steps` in both BatchNorm modes and a real
    batch; writes `artifacts.csv` and the grids to `out`, and returns the rows."""

    config = saved_config(run_dir)
    first_images = training_images(config, 2 * num_images)
    # The training's diversity reference, and the real batch measured against it.
    reference, real = first_images[:num_images], first_images[num_images:]
    if len(real) < 2:
        raise DataError(
            f"The run's data has {len(first_images)} training images: the real row needs "
            f"--num-images ({num_images}) for the diversity's reference batch and at least 2 "
            f"more. Lower --num-images.")
    reference_spread = mean_pairwise_distance(reference)

    def measured(images: np.ndarray) -> dict[str, Any]:
        return {"shared_share": shared_pattern_share(images),
                "lattice_share": lattice_power_share(images, lattice_period),
                "diversity": mean_pairwise_distance(images) / reference_spread,
                "num_images": len(images)}

    rows = [{"step": "", "mode": "real", **measured(real)}]
    latents = grid_latents(config.seed, num_images, config.latent_dim)
    for step in steps:
        generator = gan_at_step(config, run_dir, step).prepare_sampling_generator()
        for mode in MODES:
            images = np.asarray(generator(latents, training=mode == "training"))
            save_grid_png(to_uint8(images), out / f"step_{step:07d}_{mode}.png")
            rows.append({"step": step, "mode": mode, **measured(images)})
    reporting.write_csv(out / "artifacts.csv", rows, COLUMNS)
    reporting.save_figure(plot(rows, f"{run_dir.name}: detail common to all {num_images} "
                                     "samples"), out / "artifacts.png")
    return rows


def plot(rows: Sequence[dict[str, Any]], title: str) -> Figure:
    """The shared share over steps, a line per BatchNorm mode, the real batch's dashed."""
    pyplot = reporting.pyplot()
    figure, axes = pyplot.subplots(figsize=(6, 3.6))
    for mode in MODES:
        points = [(row["step"], row["shared_share"]) for row in rows if row["mode"] == mode]
        axes.plot(*zip(*points), marker="o", label=f"{mode}-mode BatchNorm")
    real = next(row["shared_share"] for row in rows if row["mode"] == "real")
    axes.axhline(real, color="grey", linestyle="--", label="real images")
    axes.set_xlabel("generator step")
    axes.set_ylabel("shared share of fine detail")
    axes.set_ylim(0, 1)
    axes.legend(fontsize=8)
    axes.grid(alpha=0.3)
    axes.set_title(title, fontsize=9)
    figure.tight_layout()
    return figure


def summary(rows: Sequence[dict[str, Any]]) -> list[str]:
    """One line per step: the shared share in each mode and how much of it lies on the
    lattice, next to the real batch's."""
    real = next(row for row in rows if row["mode"] == "real")
    lines = [f"{real['num_images']} other real images: shared share "
             f"{real['shared_share']:.3f} (independent images: about "
             f"{1 / real['num_images']:.3f}), diversity {real['diversity']:.3f}"]
    for step in dict.fromkeys(row["step"] for row in rows if row["mode"] != "real"):
        by_mode = {row["mode"]: row for row in rows if row["step"] == step}
        lines.append(
            f"step {step}: shared share {by_mode['inference']['shared_share']:.3f} with the "
            f"moving BatchNorm statistics, {by_mode['training']['shared_share']:.3f} with the "
            f"batch's own; {by_mode['inference']['lattice_share']:.3f} of it on the lattice; "
            f"diversity {by_mode['inference']['diversity']:.3f} and "
            f"{by_mode['training']['diversity']:.3f}")
    return lines
