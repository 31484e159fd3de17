"""How the experiments train: the configuration of one normalization's run on their shared
data and network (`gradients`, `sweep`), and a study's run trained to its end and marked
finished, so that a rerun of the study skips it (`sweep`, `collapse`), once the study's runs
are checked against what earlier calls left in their folders."""

from __future__ import annotations

import dataclasses
import pathlib
from collections.abc import Iterable
from typing import Any

import keras

from training.errors import RunFolderError
from training.presets import TrainConfig, configured
from training.runs import (RunFolderLock, check_run_folder, config_changes, mark_finished,
                           saved_config)
from training.trainer import check_data, train


@dataclasses.dataclass(frozen=True)
class TrainingSetup:
    """What every run of an experiment shares: data, network, length and batch."""

    dataset: str
    data_dir: str | None
    arch: str
    image_size: int
    steps: int
    batch_size: int

    def config(self, norm: str, scale: float, seed: int, **overrides: Any) -> TrainConfig:
        """The run of normalization `norm` at scale `scale` for `seed`, with `overrides`."""
        if norm == "strict":  # its own operator power iteration: the old semantics only
            overrides = {"differentiable_power_iteration": False, "vector_updates": "in_call",
                         **overrides}
        # The official semantics of the setup's architecture, as `train` would give it.
        return configured(dict(dataset=self.dataset, data_dir=self.data_dir,
                               image_size=self.image_size, arch=self.arch, norm=norm,
                               scale=scale, steps=self.steps, batch_size=self.batch_size,
                               seed=seed), overrides=overrides)


def check_study_runs(runs: Iterable[tuple[TrainConfig, pathlib.Path]]) -> None:
    """Checks, before a study trains anything, every run's settings, and that each run folder
    an earlier call left trains what this call would: a study skips the runs it finished, so
    a changed setting (another --batch-size) would otherwise report the old runs as new.

    Raises:
        ConfigError: a setting is invalid.
        RunFolderError: a run folder holds a run with other settings.
    """
    for config, folder in runs:
        config.validate()
        if not (folder / "config.json").exists():
            continue
        changes = config_changes(dataclasses.asdict(saved_config(folder)), config)
        if changes:
            raise RunFolderError(
                f"{folder} holds a run of this study with other settings:\n  "
                + "\n  ".join(changes)
                + "\nGive another --out for a study with these settings, or the earlier "
                "settings to continue this one.")


def train_to_end(config: TrainConfig, folder: pathlib.Path) -> None:
    """Trains (or resumes) one run of a study, and marks it done (`Stopped` propagates)."""
    check_data(config)
    with RunFolderLock(folder):  # two studies on one --out must not train the same run
        check_run_folder(folder, config, force=False)
        keras.backend.clear_session()
        result = train(config, folder)
        mark_finished(folder, "diverged" if result.diverged else "finished", config.steps)
