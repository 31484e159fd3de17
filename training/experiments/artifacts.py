"""Sample artifacts: how much of what a generator draws is one pattern, at the same place in
every image, whatever the latent, and whether the inference-mode BatchNorm statistics cause it.

`shared_pattern_share` measures it: the fine detail of each image (the image minus its 3x3
box blur), and the share of its energy that is common to all images (the energy of the mean
detail over the mean energy of one image's detail). Independent images give about 1/N for N
images; the same pattern in every image gives up to 1.

`run` restores a run's generator at several checkpoints (step 0: as initialized), draws the
run's grid latents in both BatchNorm modes (`inference`: the moving statistics, as the sample
grids and FID see it; `training`: the batch's own statistics), measures each, and writes
`artifacts.csv`, a grid per step and mode, and the same measure of a real batch.
"""

from __future__ import annotations

import pathlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from training import data
from training.callbacks.samples import grid_latents, to_uint8
from training.experiments import reporting
from training.images import save_grid_png
from training.runs import saved_config
from training.trainer import gan_at_step

if TYPE_CHECKING:
    from matplotlib.figure import Figure

COLUMNS = ("step", "mode", "shared_share", "num_images")
MODES = ("inference", "training")


def shared_pattern_share(images: np.ndarray) -> float:
    """The share of the images' fine detail (image minus 3x3 box blur) common to all of them.

    Example:

    >>> pattern = np.random.default_rng(0).standard_normal((1, 8, 8, 3))
    >>> round(shared_pattern_share(np.repeat(pattern, 16, axis=0)), 6)
    1.0
    """
    images = np.asarray(images, np.float64)
    height, width = images.shape[1:3]
    padded = np.pad(images, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
    blurred = sum(padded[:, row:row + height, column:column + width]
                  for row in range(3) for column in range(3)) / 9.0
    detail = images - blurred
    energy = np.mean(np.sum(detail ** 2, axis=(1, 2, 3)))
    return float(np.sum(detail.mean(axis=0) ** 2) / energy) if energy > 0 else 0.0


def run(out: pathlib.Path, run_dir: pathlib.Path, steps: Sequence[int],
        num_images: int = 64) -> list[dict[str, Any]]:
    """Measures the run's generator at each of `steps` in both BatchNorm modes and a real
    batch; writes `artifacts.csv` and the grids to `out`, and returns the rows."""
    config = saved_config(run_dir)
    real = np.stack(list(data.load_images(**config.data_source(), split="train")
                         .take(num_images).as_numpy_iterator()))
    rows = [{"step": "", "mode": "real", "shared_share": shared_pattern_share(real),
             "num_images": len(real)}]
    for step in steps:
        generator = gan_at_step(config, run_dir, step).generator
        latents = grid_latents(config.seed, num_images, config.latent_dim)
        for mode in MODES:
            images = np.asarray(generator(latents, training=mode == "training"))
            save_grid_png(to_uint8(images), out / f"step_{step:07d}_{mode}.png")
            rows.append({"step": step, "mode": mode, "shared_share":
                         shared_pattern_share(images), "num_images": num_images})
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
    """One line per step: the shared share in each mode, next to the real batch's."""
    real = next(row["shared_share"] for row in rows if row["mode"] == "real")
    lines = [f"real images: shared share {real:.3f} (independent images: about "
             f"{1 / rows[0]['num_images']:.3f})"]
    for step in dict.fromkeys(row["step"] for row in rows if row["mode"] != "real"):
        shares = {row["mode"]: row["shared_share"] for row in rows if row["step"] == step}
        lines.append(f"step {step}: shared share {shares['inference']:.3f} with the moving "
                     f"BatchNorm statistics, {shares['training']:.3f} with the batch's own")
    return lines
