"""How the experiments train: the configuration of one normalization's run on their shared
data and network (`gradients`, `sweep`), and a study's run trained to its end and marked
finished, so that a rerun of the study skips it (`sweep`, `collapse`)."""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Any

import keras

from training.presets import TrainConfig
from training.runs import RunFolderLock, check_run_folder, mark_finished
from training.trainer import train


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
        return TrainConfig(dataset=self.dataset, data_dir=self.data_dir,
                           image_size=self.image_size, arch=self.arch, norm=norm, scale=scale,
                           steps=self.steps, batch_size=self.batch_size, seed=seed, **overrides)


def train_to_end(config: TrainConfig, folder: pathlib.Path) -> None:
    """Trains (or resumes) one run of a study, and marks it done (`Stopped` propagates)."""
    with RunFolderLock(folder):  # two studies on one --out must not train the same run
        check_run_folder(folder, config, force=False)
        keras.backend.clear_session()
        result = train(config, folder)
        mark_finished(folder, "diverged" if result.diverged else "finished", config.steps)
