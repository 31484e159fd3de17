"""Training configurations: the settings a run needs, and the paper's grid by name.

Names are `<dataset>-<arch>-<norm>[-<setting>]`:
- no suffix: setting (a) of paper.md, Adam(lr 1e-4, betas 0.5/0.999), n_dis 1, with the preset's
  scale (sweep it with --scale: {0.7, ..., 4.0} on CIFAR10, {0.7, ..., 1.6} on STL10/CelebA);
- `-g2e-4-d1e-4`, `-g1e-4-d2e-4`, `-g2e-4-d2e-4`: setting (b), c = 1, the learning-rate grid;
- `-ndis5`: setting (c), c = 1, betas (0.5, 0.9), n_dis 5.
ImageNet uses the ResNet: lr 2e-4, betas (0.0, 0.9), n_dis 5, D batch 16, G batch 32.

Every preset trains as the official BSN code does (`semantics("official", arch)`): the
gradient through the power iteration, u advanced after each D update, G BatchNorm momentum 0.9
and epsilon 1e-5, Adam epsilon 1e-8, the official initializers, and (CNN) the D step's
latents reused in the G step or (ResNet) G BatchNorm statistics updated in the G step only.
`semantics("keras", arch)` is what this project did before 0.2: Miyato/PyTorch SN with Keras
defaults. The README's table lists each setting.
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

from training.errors import UserError
from training.protocol import (INCEPTION_2015_NAME, NUM_FID_SAMPLES, NUM_IS_SAMPLES,
                               NUM_REAL_SAMPLES)


@dataclasses.dataclass
class TrainConfig:
    """Everything that defines a training run (saved as the run folder's config.json)."""

    dataset: str = "cifar10"
    data_dir: str | None = None
    split: str = "train"
    image_size: int = 32
    crop_size: int | None = None
    arch: str = "cnn"
    norm: str = "bssn"
    scale: float = 1.0
    power_iterations: int = 1
    differentiable_power_iteration: bool = True
    vector_updates: str = "explicit"
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
    adam_epsilon: float = 1e-8
    bn_momentum: float = 0.9
    bn_epsilon: float = 1e-5
    initializers: str = "official"
    reuse_latents: bool = True
    generator_bn_updates: str = "every_forward"
    antialias: bool = True
    shuffle_buffer: int | None = None  # None: the whole data set where it is cached
    seed: int = 0
    strategy: str = "auto"
    precision: str = "float32"
    jit_compile: bool = False
    log_every: int = 100
    input_gradient_every: int | None = None  # None: DEFAULT_INPUT_GRADIENT_EVERY
    sample_every: int = 500  # the first grid shows an early collapse (README)
    checkpoint_every: int = 1000
    keep_checkpoints: int = 3
    fid_every: int = 10_000
    fid_samples: int = NUM_FID_SAMPLES
    fid_real_samples: int = NUM_REAL_SAMPLES
    is_samples: int = NUM_IS_SAMPLES
    extractor: str = INCEPTION_2015_NAME
    export_name: str | None = None

    def data_source(self) -> dict[str, Any]:
        """The arguments that name this run's images for `training.data`'s loaders."""
        return {"dataset": self.dataset, "data_dir": self.data_dir, "split": self.split,
                "image_size": self.image_size, "crop_size": self.crop_size,
                "antialias": self.antialias}

    def input_gradient_interval(self) -> int:
        """Steps between the steps whose ||grad_x D|| is measured: `input_gradient_every`, or
        by default every 10th step (every step of rows shorter than 10 steps)."""
        if self.input_gradient_every is not None:
            return self.input_gradient_every
        return min(DEFAULT_INPUT_GRADIENT_EVERY, self.log_every)

    def validate(self) -> None:
        """Checks every setting, before anything is written; raises `ConfigError` naming the
        flag, the value and what it takes."""
        self.validate_values()
        self.validate_names()

    def validate_names(self) -> None:
        """The checks of `validate` against lists of names (of norms, losses, ...), which live
        in modules that load Keras and TensorFlow."""
        from training import data, losses
        from training.distribute import STRATEGY_NAMES
        from training.networks import ARCHITECTURES
        from training.networks.cnn import INITIALIZERS
        from training.networks.normalization import NORMALIZATIONS
        from training.networks.resnet import SUPPORTED_SIZES as RESNET_SIZES
        from keras_bssn.wrappers import VECTOR_UPDATES
        from training.gan import GENERATOR_BN_UPDATES

        choices = {"dataset": data.DATASETS, "arch": tuple(ARCHITECTURES),
                   "norm": NORMALIZATIONS, "loss": losses.LOSSES, "strategy": STRATEGY_NAMES,
                   "vector_updates": VECTOR_UPDATES, "initializers": INITIALIZERS,
                   "generator_bn_updates": GENERATOR_BN_UPDATES}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                _refuse(name, getattr(self, name), f"one of {', '.join(allowed)}")
        if self.arch == "resnet" and self.image_size not in RESNET_SIZES:
            _refuse("image_size", self.image_size,
                    f"one of {', '.join(map(str, RESNET_SIZES))} for the ResNet")

    def validate_values(self) -> None:
        """The checks of `validate` that need no list of names, so no Keras or TensorFlow:
        numbers, their combinations and paths."""
        for name in ("image_size", "latent_dim", "steps", "batch_size", "n_dis",
                     "power_iterations", "log_every", "sample_every", "checkpoint_every",
                     "keep_checkpoints", "fid_samples", "fid_real_samples", "is_samples"):
            _check_int(name, getattr(self, name), minimum=1)
        if self.precision not in PRECISIONS:
            _refuse("precision", self.precision, f"one of {', '.join(PRECISIONS)}")
        if (self.input_gradient_every or 0) > self.log_every:
            raise ConfigError(
                f"--input-gradient-every {self.input_gradient_every} is larger than --log-every "
                f"{self.log_every}: a metrics row would average no ||grad_x D|| sample. Give "
                f"--input-gradient-every {self.log_every} or less.")
        _check_int("fid_every", self.fid_every, minimum=0)
        for name in ("generator_batch_size", "crop_size", "input_gradient_every",
                     "shuffle_buffer"):
            if getattr(self, name) is not None:
                _check_int(name, getattr(self, name), minimum=1)
        for name in ("scale", "g_lr", "d_lr", "adam_epsilon", "bn_epsilon"):
            _check_float(name, getattr(self, name), low=0.0, low_open=True)
        _check_float("gradient_penalty", self.gradient_penalty, low=0.0)
        for name in ("beta1", "beta2", "bn_momentum"):
            _check_float(name, getattr(self, name), low=0.0, high=1.0)
        if self.ema_decay is not None:
            _check_float("ema_decay", self.ema_decay, low=0.0, high=1.0, low_open=True)
        if self.arch == "cnn" and self.image_size % 8:
            _refuse("image_size", self.image_size, "a multiple of 8 for the CNN (32, 48, 64)")
        if self.norm == "none" and self.scale != 1.0:
            _refuse("scale", self.scale, "1 with --norm none (c multiplies a normalized "
                    "weight)")
        if self.norm == "strict" and (self.differentiable_power_iteration
                                      or self.vector_updates != "in_call"):
            raise ConfigError("--norm strict has its own power iteration over the convolution "
                              "operator; give it --semantics keras (or "
                              "--differentiable-power-iteration false --vector-updates "
                              "in_call).")
        if self.reuse_latents and self.generator_batch_size is not None:
            raise ConfigError("--reuse-latents true reuses the discriminator's latents, so the "
                              "generator batch is the discriminator's; drop "
                              "--generator-batch-size or give --reuse-latents false.")
        if self.dataset in ("folder", "npz") and not self.data_dir:
            raise ConfigError(f"--dataset {self.dataset} needs --data-dir (a folder or "
                              ".tar.gz of images for folder, a .npz/.npy file for npz).")
        if self.export_name is not None and (
                not self.export_name or self.export_name in (".", "..")
                or any(separator in self.export_name for separator in "/\\")):
            _refuse("export_name", self.export_name, "a plain folder name inside "
                    "saved_models/ (no path separators, not '.' or '..')")

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    @classmethod
    def parse_setting(cls, name: str, text: str) -> Any:
        """The value of setting `name` written as `text` (as on a command line), by the
        setting's type; `none` for a setting that may be unset.

        Example:

        >>> TrainConfig.parse_setting("reuse_latents", "false")
        False
        """
        types = {field.name: str(field.type) for field in dataclasses.fields(cls)}
        if name not in types:
            raise ConfigError(f"Unknown setting {name!r}; known settings: {sorted(types)}.")
        kind = types[name]
        if "None" in kind and text.lower() == "none":
            return None
        try:
            if kind.startswith("bool"):
                return parse_boolean(text)
            if kind.startswith("int"):
                return int(text)
            if kind.startswith("float"):
                return float(text)
        except ValueError:
            _refuse(name, text, f"a value of type {kind}")
        return text

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrainConfig":
        """A saved configuration; keys it lacks were written before they existed, so they
        take the values of that time (`LEGACY_VALUES`), not today's defaults."""
        values = upgrade_saved(values)
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"Unknown config keys {unknown}; known keys: {sorted(known)}.")
        return cls(**values)


def upgrade_saved(values: dict[str, Any]) -> dict[str, Any]:
    """A saved configuration in today's settings: those it lacks take the values of the time
    it was written (`LEGACY_VALUES`); `mixed_precision` (before 0.3) becomes `precision`."""
    values = {**LEGACY_VALUES, **values}
    if "mixed_precision" in values:
        values["precision"] = "float16" if values.pop("mixed_precision") else "float32"
    return values


# Settings that may change between a run and its resumption without changing what it trains.
RESUMABLE_CHANGES = ("steps", "data_dir", "log_every", "sample_every", "checkpoint_every",
                     "keep_checkpoints", "fid_every", "fid_samples", "fid_real_samples",
                     "is_samples", "extractor", "export_name", "strategy",
                     "input_gradient_every")

class ConfigError(UserError, ValueError):
    """A setting is invalid; the message names its flag, the value and what it takes."""


_BOOLEAN_WORDS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


def parse_boolean(text: str) -> bool:
    """true/false, yes/no or 1/0, in any case; ValueError for anything else."""
    if text.lower() not in _BOOLEAN_WORDS:
        raise ValueError(f"expected true or false, got {text!r}")
    return _BOOLEAN_WORDS[text.lower()]


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _refuse(name: str, value: Any, expected: str) -> None:
    raise ConfigError(f"{_flag(name)} {value!r} is invalid: give {expected}.")


# The largest count of steps, images or batches: TensorFlow counts many of them in int32.
_MAX_COUNT = 2**31 - 1


def _check_int(name: str, value: Any, minimum: int) -> None:
    if (isinstance(value, bool) or not isinstance(value, int) or value < minimum
            or value > _MAX_COUNT):
        _refuse(name, value, f"a whole number in [{minimum}, {_MAX_COUNT}]")


# The largest float32: the models compute in float32 (or float16), where a larger setting
# is infinite (an Adam epsilon of 1e308 would stop every update).
_FLOAT32_MAX = 3.4028234663852886e38


def _check_float(name: str, value: Any, low: float, high: float | None = None,
                 low_open: bool = False) -> None:
    """A number in [low, high) (or (low, high) with `low_open`), finite in float32."""
    valid = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(
        value) and (value > low if low_open else value >= low) and (
        value <= _FLOAT32_MAX if high is None else value < high)
    if not valid:
        upper = f"{_FLOAT32_MAX:.2g}]" if high is None else f"{high:g})"
        _refuse(name, value, f"a finite number in {'(' if low_open else '['}{low:g}, {upper}")


# ||grad_x D|| costs a second backward pass through D on each step it is measured on: every
# 10th step costs a tenth of measuring every step, and leaves training as it is.
DEFAULT_INPUT_GRADIENT_EVERY = 10

# --precision: the Keras dtype policy each selects. Mixed policies compute in 16 bits and keep
# variables, optimizer state, BatchNorm statistics, sigmas and losses in float32; only float16
# needs loss scaling (bfloat16 has float32's exponent range).
PRECISIONS = {"float32": "float32", "bfloat16": "mixed_bfloat16", "float16": "mixed_float16"}


# What a configuration selects beyond the paper's hyper-parameters: how the official code trains
# ("official"), and what this project did before 0.2 ("keras": Miyato/PyTorch SN, Keras defaults).
SEMANTICS_NAMES = ("official", "keras")


def semantics(name: str, arch: str = "cnn") -> dict[str, Any]:
    """The settings of a training semantics for an architecture.

    Example:

    >>> semantics("keras")["bn_momentum"]
    0.99
    """
    if name not in SEMANTICS_NAMES:
        raise ConfigError(f"Unknown semantics {name!r}; choose one of "
                         f"{', '.join(SEMANTICS_NAMES)}.")
    if name == "keras":
        return {"differentiable_power_iteration": False, "vector_updates": "in_call",
                "bn_momentum": 0.99, "bn_epsilon": 1e-3, "adam_epsilon": 1e-7,
                "initializers": "truncated", "reuse_latents": False,
                "generator_bn_updates": "every_forward", "antialias": True}
    official = {"differentiable_power_iteration": True, "vector_updates": "explicit",
                "bn_momentum": 0.9, "bn_epsilon": 1e-5, "adam_epsilon": 1e-8,
                "initializers": "official"}
    if arch == "resnet":
        return {**official, "reuse_latents": False, "generator_bn_updates": "generator_step"}
    return {**official, "reuse_latents": True, "generator_bn_updates": "every_forward"}


# Run folders written before these settings existed trained with these values.
LEGACY_VALUES: dict[str, Any] = {**semantics("keras"), "precision": "float32",
                                 "input_gradient_every": 1, "shuffle_buffer": 10_000,
                                 "split": "train"}

_DATASETS = {  # name: (image size, generator steps, default BSSN/SSN scale)
    "cifar10": (32, 400_000, 1.2),
    "stl10": (48, 800_000, 1.2),
    "celeba": (64, 400_000, 1.2),
}
_TFDS_NAMES = {"celeba": "celeb_a"}
# The paper's centre crop before resizing, also applied to a folder of the same images.
_CROP_SIZES = {"celeba": 128}
# The official preprocessing (dataset_preprocess/ of the BSN code): STL10's 100,000 unlabelled
# images and all 202,599 CelebA images, resized by cv2.resize (bilinear, no antialiasing).
_OFFICIAL_DATA = {"stl10": {"split": "unlabelled", "antialias": False},
                  "celeba": {"split": "all", "antialias": False}}


def _cnn_presets() -> dict[str, dict[str, Any]]:
    presets = {}
    for dataset, (size, steps, scaled) in _DATASETS.items():
        base = {"dataset": _TFDS_NAMES.get(dataset, dataset), "image_size": size,
                "crop_size": _CROP_SIZES.get(dataset), "arch": "cnn", "steps": steps,
                **_OFFICIAL_DATA.get(dataset, {})}
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
        # The official ImageNet loader resizes with cv2.resize (INTER_LINEAR, no antialiasing).
        "imagenet-resnet-sn": {**imagenet, "norm": "sn", "antialias": False},
        "imagenet-resnet-bssn": {**imagenet, "norm": "bssn", "scale": 1.2, "antialias": False},
        "cifar10-resnet-sn": {**cifar, "norm": "sn"},
        "cifar10-resnet-bssn": {**cifar, "norm": "bssn", "scale": 1.2},
    }


PRESETS: dict[str, dict[str, Any]] = {**_cnn_presets(), **_resnet_presets()}


def preset(name: str, semantics_name: str | None = None, **overrides: Any) -> TrainConfig:
    """The configuration of a named preset, under a training semantics, with single settings
    overridden (`configured`).

    Args:
        name: a key of `PRESETS`.
        semantics_name: "official" or "keras" (see `semantics`); None keeps the preset's own
            settings.
        **overrides: `TrainConfig` settings, over the preset's and the semantics'.

    Returns:
        The configuration; its semantics is that of the architecture it ends with.

    Example:

    ```python
    preset("cifar10-cnn-bssn").scale  # 1.2
    preset("cifar10-cnn-bssn", arch="resnet").reuse_latents  # False, as the official ResNet
    ```
    """
    if name not in PRESETS:
        raise ConfigError(f"Unknown preset {name!r}. Presets: {', '.join(sorted(PRESETS))}.")
    return configured(PRESETS[name], semantics_name, overrides)


def configured(values: dict[str, Any], semantics_name: str | None = None,
               overrides: dict[str, Any] | None = None) -> TrainConfig:
    """`values` (a preset's settings, say) under a training semantics, with `overrides`.

    The semantics is resolved for the architecture the configuration ends with (that of
    `overrides`, else of `values`), so a CNN's settings given `arch="resnet"` train as the
    official ResNet code does, not as the CNN. Without `semantics_name`, `values` refine the
    official semantics; with it, the semantics replaces them. `overrides` win over both.

    Args:
        values: `TrainConfig` settings.
        semantics_name: "official" or "keras", or None.
        overrides: `TrainConfig` settings given explicitly (flags).

    Returns:
        The configuration.
    """
    overrides = overrides or {}
    arch = overrides.get("arch", values.get("arch", TrainConfig.arch))
    if semantics_name is None:
        settings = {**semantics("official", arch), **values}
    else:
        settings = {**values, **semantics(semantics_name, arch)}
    return TrainConfig(**{**settings, **overrides})
