"""Exporting a run: the sampling generator of a trained GAN, or of a run folder's newest
checkpoint, as a SavedModel named after the run, with the run's settings as its metadata.

The SavedModel format itself (writing, loading, checking) is `training.export`'s; this module
is apart from it because it needs the GAN and its checkpoints, which `training.export`'s
readers (`training.evaluation`, and through it the FID callback) must not import.
"""

from __future__ import annotations

import pathlib

import tensorflow as tf

from training.building import restore_gan
from training.callbacks.steps import generator_step
from training.distribute import make_strategy
from training.errors import OutputPathError, RunFolderError, is_disk_full
from training.export import check_export_path, export_generator
from training.gan import GAN
from training.presets import TrainConfig
from training.runs import check_writable_folder


def export_run(config: TrainConfig, run_dir: pathlib.Path,
               saved_models: str | pathlib.Path = "saved_models") -> tuple[pathlib.Path, int]:
    """Exports the sampling generator of the run's newest checkpoint to
    `saved_models/<export_name or run folder name>`; returns the path and the step.

    Raises:
        RunFolderError: the run has no checkpoint.
    """
    gan, checkpoint = restore_gan(config, run_dir, make_strategy(config.strategy))
    if checkpoint.step == 0:
        raise RunFolderError(f"{run_dir} has no checkpoint to export; train it first.")
    return export(gan, config, run_dir, saved_models), checkpoint.step


def check_export_target(config: TrainConfig, run_dir: pathlib.Path,
                        saved_models: str | pathlib.Path) -> None:
    """Checks, before any training, that `export` can write the run's export.

    Raises:
        OutputPathError: `saved_models` cannot be written.
        ExportError: the export's folder exists and is not an earlier export.
    """
    check_writable_folder(saved_models, "--saved-models")
    check_export_path(_export_path(config, run_dir, saved_models))


def _export_path(config: TrainConfig, run_dir: pathlib.Path,
                 saved_models: str | pathlib.Path) -> pathlib.Path:
    return pathlib.Path(saved_models) / (config.export_name or run_dir.name)


def export(gan: GAN, config: TrainConfig, run_dir: pathlib.Path,
           saved_models: str | pathlib.Path) -> pathlib.Path:
    """Exports a trained GAN's sampling generator to `saved_models/<export_name or run name>`."""
    metadata = {"normalization": config.norm, "scale": config.scale, "dataset": config.dataset,
                "architecture": config.arch, "step": generator_step(gan),
                "ema": config.ema_decay is not None}
    path = _export_path(config, run_dir, saved_models)
    try:
        return export_generator(gan.prepare_sampling_generator(), path, metadata)
    except (OSError, tf.errors.OpError) as error:
        if not is_disk_full(error):
            raise
        # The export is written aside and renamed into place: an earlier one is intact.
        raise OutputPathError(
            f"the disk of {path} is full ({error}). The run's checkpoints are intact; free "
            f"some space and export them with python -m training.train --export-only --out "
            f"{run_dir} .") from None
