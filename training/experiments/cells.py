"""The cells of the collapse study (`training.experiments.collapse`): a normalization, a scale
and a training semantics, plus single overridden settings for an ablation, written
`NORM:SCALE:SEMANTICS[+SETTING=VALUE...]`; each with its run configuration and run folder.

Importable without TensorFlow, so that `python -m training.analyze` shows its defaults at once.
"""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Any

from training.presets import ConfigError, TrainConfig, preset, semantics

DEFAULT_CELLS = ("bssn:1.2:official", "sn:1:official", "bssn:1.2:keras", "sn:1:keras")
_STUDY_INTERVALS = {"sample_every": 500, "checkpoint_every": 250, "fid_every": 0}
# What the study sets for every run (norm and scale in a cell's head, the rest by its flags):
# no cell overrides them.
STUDY_SETTINGS = ("dataset", "data_dir", "norm", "scale", "seed", "steps", "log_every",
                  "batch_size", "jit_compile", *_STUDY_INTERVALS)


@dataclasses.dataclass(frozen=True)
class Cell:
    """A normalization, scale and semantics (plus single overridden settings)."""

    norm: str
    scale: float
    semantics: str
    overrides: tuple[tuple[str, Any], ...] = ()

    @classmethod
    def parse(cls, spec: str) -> "Cell":
        """Reads `NORM:SCALE:SEMANTICS[+SETTING=VALUE...]`."""
        head, *extras = spec.split("+")
        parts = head.split(":")
        if len(parts) != 3:
            raise ConfigError(f"A cell is NORM:SCALE:SEMANTICS[+SETTING=VALUE...], e.g. "
                              f"bssn:1.2:official; got {spec!r}.")
        norm, scale, semantics_name = parts
        semantics(semantics_name)  # refuses an unknown name
        fields = {field.name for field in dataclasses.fields(TrainConfig)}
        overrides = []
        for extra in extras:
            name, _, value = extra.partition("=")
            if name not in fields or not value:
                raise ConfigError(f"{extra!r} in cell {spec!r} is not SETTING=VALUE with a "
                                  "setting of TrainConfig.")
            if name in STUDY_SETTINGS:
                raise ConfigError(f"{extra!r} in cell {spec!r}: the study sets {name} for "
                                  "every run (norm and scale in the cell's NORM:SCALE, the "
                                  "rest with its flags); drop it from the cell.")
            overrides.append((name, TrainConfig.parse_setting(name, value)))
        try:
            scale_value = float(scale)
        except ValueError:
            raise ConfigError(f"The scale of cell {spec!r} is not a number: {scale!r}.") from None
        return cls(norm, scale_value, semantics_name, tuple(overrides))

    @property
    def name(self) -> str:
        """The cell as written, normalized (also its run folders' prefix)."""
        extras = "".join(f"+{name}={value}".lower() for name, value in self.overrides)
        return f"{self.norm}:{self.scale:g}:{self.semantics}{extras}"

    def config(self, seed: int, steps: int, log_every: int, dataset: str,
               data_dir: str | None, batch_size: int = 64,
               jit_compile: bool = False) -> TrainConfig:
        """The run of this cell for one seed."""
        # The semantics of the architecture a cell may override.
        base = preset("cifar10-cnn-bssn", self.semantics, **dict(self.overrides))
        return dataclasses.replace(
            base, dataset=dataset, data_dir=data_dir, norm=self.norm, scale=self.scale, seed=seed,
            steps=steps, log_every=log_every, batch_size=batch_size, jit_compile=jit_compile,
            **_STUDY_INTERVALS)

    def folder(self, root: pathlib.Path, seed: int) -> pathlib.Path:
        """The run folder of this cell for one seed under the study's folder `root`."""
        safe = self.name.replace(":", "-").replace("+", "_").replace("=", "-")
        return root / "runs" / f"{safe}-s{seed}"
