"""Training configurations: the settings a run needs, and the paper's grid by name.

Names are `<dataset>-<arch>-<norm>[-<setting>]`:
- no suffix: setting (a) of paper.md, Adam(lr 1e-4, betas 0.5/0.999), n_dis 1, with the preset's
  scale (sweep it with --scale: {0.7, ..., 4.0} on CIFAR10, {0.7, ..., 1.6} on STL10/CelebA);
- `-g2e-4-d1e-4`, `-g1e-4-d2e-4`, `-g2e-4-d2e-4`: setting (b), c = 1, the learning-rate grid;
- `-ndis5`: setting (c), c = 1, betas (0.5, 0.9), n_dis 5.
ImageNet uses the ResNet: lr 2e-4, betas (0.0, 0.9), n_dis 5, D batch 16, G batch 32.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any


@dataclasses.dataclass
class TrainConfig:
    """Everything that defines a training run (saved as the run folder's config.json)."""

    dataset: str = "cifar10"
    data_dir: str | None = None
    image_size: int = 32
    crop_size: int | None = None
    arch: str = "cnn"
    norm: str = "bssn"
    scale: float = 1.0
    power_iterations: int = 1
    latent_dim: int = 128
    loss: str = "hinge"
    steps: int = 400_000
    batch_size: int = 64
    generator_batch_size: int | None = None
    n_dis: int = 1
    g_lr: float = 1e-4
    d_lr: float = 1e-4
    beta1: float = 0.5
    beta2: float = 0.999
    gradient_penalty: float = 0.0
    ema_decay: float | None = None
    seed: int = 0
    strategy: str = "auto"
    mixed_precision: bool = False
    jit_compile: bool = False
    log_every: int = 100
    sample_every: int = 1000
    checkpoint_every: int = 1000
    keep_checkpoints: int = 3
    fid_every: int = 10_000
    fid_samples: int = 10_000
    fid_real_samples: int = 5_000
    is_samples: int = 50_000
    extractor: str = "inception-2015"
    export_name: str | None = None

    def data_source(self) -> dict[str, Any]:
        """The arguments that name this run's images for `training.data`'s loaders."""
        return {"dataset": self.dataset, "data_dir": self.data_dir,
                "image_size": self.image_size, "crop_size": self.crop_size}

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrainConfig":
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"Unknown config keys {unknown}; known keys: {sorted(known)}.")
        return cls(**values)


# Settings that may change between a run and its resumption without changing what it trains.
RESUMABLE_CHANGES = ("steps", "data_dir", "log_every", "sample_every", "checkpoint_every",
                     "keep_checkpoints", "fid_every", "fid_samples", "fid_real_samples",
                     "is_samples", "extractor", "export_name", "strategy")

_DATASETS = {  # name: (image size, generator steps, default BSSN/SSN scale)
    "cifar10": (32, 400_000, 1.2),
    "stl10": (48, 800_000, 1.2),
    "celeba": (64, 400_000, 1.2),
}
_TFDS_NAMES = {"celeba": "celeb_a"}
# The paper's centre crop before resizing, also applied to a folder of the same images.
_CROP_SIZES = {"celeba": 128}


def _cnn_presets() -> dict[str, dict[str, Any]]:
    presets = {}
    for dataset, (size, steps, scaled) in _DATASETS.items():
        base = {"dataset": _TFDS_NAMES.get(dataset, dataset), "image_size": size,
                "crop_size": _CROP_SIZES.get(dataset), "arch": "cnn", "steps": steps}
        for norm in ("sn", "ssn", "bsn", "bssn"):
            scale = scaled if norm in ("ssn", "bssn") else 1.0
            presets[f"{dataset}-cnn-{norm}"] = {**base, "norm": norm, "scale": scale}
        for norm in ("sn", "bsn"):
            for g_lr, d_lr in ((2e-4, 1e-4), (1e-4, 2e-4), (2e-4, 2e-4)):
                presets[f"{dataset}-cnn-{norm}-g{g_lr:.0e}-d{d_lr:.0e}".replace("e-0", "e-")] = {
                    **base, "norm": norm, "g_lr": g_lr, "d_lr": d_lr}
            presets[f"{dataset}-cnn-{norm}-ndis5"] = {
                **base, "norm": norm, "beta2": 0.9, "n_dis": 5,
                "steps": 400_000 if dataset == "stl10" else steps}
    return presets


def _resnet_presets() -> dict[str, dict[str, Any]]:
    imagenet = {"dataset": "imagenet2012", "image_size": 128, "arch": "resnet", "steps": 500_000,
                "g_lr": 2e-4, "d_lr": 2e-4, "beta1": 0.0, "beta2": 0.9, "n_dis": 5,
                "batch_size": 16, "generator_batch_size": 32}
    cifar = {"dataset": "cifar10", "image_size": 32, "arch": "resnet", "steps": 50_000,
             "g_lr": 2e-4, "d_lr": 2e-4, "beta1": 0.0, "beta2": 0.9, "n_dis": 5}
    return {
        "imagenet-resnet-sn": {**imagenet, "norm": "sn"},
        "imagenet-resnet-bssn": {**imagenet, "norm": "bssn", "scale": 1.2},
        "cifar10-resnet-sn": {**cifar, "norm": "sn"},
        "cifar10-resnet-bssn": {**cifar, "norm": "bssn", "scale": 1.2},
    }


PRESETS: dict[str, dict[str, Any]] = {**_cnn_presets(), **_resnet_presets()}


def preset(name: str) -> TrainConfig:
    """The configuration of a named preset.

    Example:

    >>> preset("cifar10-cnn-bssn").scale
    1.2
    """
    if name not in PRESETS:
        raise ValueError(f"Unknown preset {name!r}. Presets: {', '.join(sorted(PRESETS))}.")
    return TrainConfig(**PRESETS[name])
