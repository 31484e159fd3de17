"""What the TensorFlow benchmarks share: flags, environment report, the GAN steps they time
(the main command's among them), dtype policies, and interleaved timing of TensorFlow steps
(the method, statistics and tables are `timing`'s)."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import platform
from typing import Callable, Mapping, Sequence

import numpy as np

# Imported by the scripts before TensorFlow: quiets the C++ logging that honours this level
# (the rest goes to stderr, away from the report on stdout) and selects the backend timed here.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import training  # noqa: E402,F401  (TensorFlow's CPU kernels as the commands choose them)
import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from benchmarks import timing  # noqa: E402
from benchmarks.timing import Samples, Step  # noqa: E402
from training.building import build_gan as build_preset_gan, dtype_policy_kept  # noqa: E402
from training.gan import GAN  # noqa: E402
from training.networks.cnn import cnn_discriminator  # noqa: E402
from training.presets import PRECISIONS, TrainConfig, preset, semantics  # noqa: E402

# The setting both scripts time: the paper's CIFAR10 CNN, and a BSSN scale from its CIFAR10
# sweep (c in {0.7, ..., 4.0}). The scale costs nothing extra: it only changes a constant.
IMAGE_SIZE = 32
BSSN_SCALE = 1.2
NORM_LABELS = {"none": "none", "keras-sn": "keras.layers.SN", "sn": "ours SN",
               "bssn": f"ours BSSN (c={BSSN_SCALE})"}


def keras_sn_discriminator(image_size: int = IMAGE_SIZE) -> keras.Model:
    """The reference discriminator with Keras's own SpectralNormalization on every conv/dense.

    Cloned from `cnn_discriminator(norm="none")` so the architecture stays defined in one
    place; the clone wraps exactly the layers that `norm="sn"` wraps.
    """

    def wrap(layer: keras.layers.Layer) -> keras.layers.Layer:
        fresh = layer.__class__.from_config(layer.get_config())
        if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense)):
            return keras.layers.SpectralNormalization(fresh, name=layer.name)
        return fresh

    return keras.models.clone_model(cnn_discriminator(image_size, norm="none"),
                                    clone_function=wrap)


def build_discriminator(norm: str, image_size: int = IMAGE_SIZE) -> keras.Model:
    """The CNN discriminator with `norm` ("none", "keras-sn", "sn" or "bssn")."""
    if norm == "keras-sn":
        return keras_sn_discriminator(image_size)
    scale = BSSN_SCALE if norm == "bssn" else 1.0
    return cnn_discriminator(image_size, norm=norm, scale=scale)


def add_precision_argument(parser: argparse.ArgumentParser, default: Sequence[str],
                           purpose: str) -> None:
    """`--precision`: one or more of float32, bfloat16, float16, as `training.train` takes."""
    policies = ", ".join(f"{name}: {policy}" for name, policy in PRECISIONS.items())
    parser.add_argument("--precision", nargs="+", choices=list(PRECISIONS), default=list(default),
                        help=f"{purpose}, each under Keras's dtype policy ({policies}) "
                             f"(default: {' '.join(default)})")


def precision_policy(precision: str) -> contextlib.AbstractContextManager:
    """Keras's global dtype policy of `precision` inside, the one before (float32) after.

    Layers and optimizers take the policy when they are made, and the GAN decides on loss
    scaling when it is compiled: build, compile and trace a variant's step inside.
    """
    return dtype_policy_kept(PRECISIONS[precision])


# The README's main command: `python -m training.train --preset cifar10-cnn-bssn --semantics keras`.
MAIN_JOB_PRESET = "cifar10-cnn-bssn"
MAIN_JOB_SEMANTICS = "keras"


def main_job_config(precision: str, batch_size: int, seed: int) -> TrainConfig:
    """The configuration the README's main command trains, in `precision`."""
    return dataclasses.replace(preset(MAIN_JOB_PRESET), **semantics(MAIN_JOB_SEMANTICS),
                               precision=precision, batch_size=batch_size, seed=seed)


def real_images(batch_size: int, seed: int) -> tf.data.Dataset:
    """One synthetic batch in [-1, 1], repeated: the input pipeline costs nothing to time."""
    images = tf.random.uniform((batch_size, IMAGE_SIZE, IMAGE_SIZE, 3), -1.0, 1.0, seed=seed)
    return tf.data.Dataset.from_tensors(images).repeat()


def train_step(gan: GAN, dataset: tf.data.Dataset) -> Step:
    """A call running one compiled training step, exactly as `fit` runs it."""
    # One short fit builds the optimizers' variables and the compiled train function (fit
    # builds them before the first step; the function is cached on the model afterwards).
    gan.fit(dataset, steps_per_epoch=1, epochs=1, verbose=0, shuffle=False)
    function = gan.make_train_function()
    iterator = iter(dataset)
    return lambda: function(iterator)


def main_job_step(precision: str, batch_size: int, seed: int) -> tuple[GAN, Step]:
    """The main command's GAN in `precision` and a call running its compiled training step."""
    config = main_job_config(precision, batch_size, seed)
    seed_everything(seed)
    with precision_policy(precision):  # build_gan sets it too; this restores float32 after
        gan = build_preset_gan(config)
        return gan, train_step(gan, real_images(config.batch_size * config.n_dis, seed))


def add_common_arguments(parser: argparse.ArgumentParser, default_rounds: int,
                         default_warmup: int) -> None:
    """The flags both scripts take."""
    parser.add_argument("--batch-size", type=int, default=64,
                        help="discriminator batch (default: 64, the paper's CIFAR10 batch)")
    parser.add_argument("--rounds", type=int, default=default_rounds,
                        help="interleaved rounds; each round times every variant once "
                             f"(default: {default_rounds})")
    parser.add_argument("--warmup", type=int, default=default_warmup,
                        help=f"untimed calls per variant before timing (default: "
                             f"{default_warmup})")
    parser.add_argument("--jit", action="store_true",
                        help="compile the timed steps with XLA (jit_compile=True)")
    parser.add_argument("--backend-info", action="store_true",
                        help="also print build, thread and CPU details of the backend")
    parser.add_argument("--seed", type=int, default=0,
                        help="seeds weights, inputs and the per-round variant order")


def check_common_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    # --warmup too: the first call traces (and with --jit compiles), which would swamp the
    # median if it were timed.
    timing.check_at_least_one(parser, args, ("batch_size", "rounds", "warmup"))


def devices() -> list[str]:
    """The devices TensorFlow places work on, e.g. ['CPU:0'] or ['GPU:0 (NVIDIA H200)']."""
    names = []
    for device in tf.config.list_physical_devices():
        label = device.name.replace("/physical_device:", "")
        if device.device_type == "GPU":
            details = tf.config.experimental.get_device_details(device)
            label += f" ({details.get('device_name', 'unknown GPU')})"
        names.append(label)
    return names


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def environment_report(jit: bool, backend_info: bool) -> str:
    """Versions and device (always), plus build/thread details with `backend_info`."""
    lines = [
        f"TensorFlow {tf.__version__}, Keras {keras.__version__} "
        f"(backend: {keras.backend.backend()}), Python {platform.python_version()}",
        f"device: {', '.join(devices())}; {os.cpu_count()} CPU cores visible; "
        f"XLA: {'on' if jit else 'off'}; "
        f"oneDNN kernels: TF_ENABLE_ONEDNN_OPTS={os.environ.get('TF_ENABLE_ONEDNN_OPTS')}",
    ]
    if backend_info:
        build = tf.sysconfig.get_build_info()
        lines += [
            f"CPU: {_cpu_model()}",
            f"TF built with CUDA: {build.get('is_cuda_build', False)}",
            f"TF threads: intra-op {tf.config.threading.get_intra_op_parallelism_threads()}, "
            f"inter-op {tf.config.threading.get_inter_op_parallelism_threads()} (0 = all cores)",
            f"floatx: {keras.config.floatx()}; dtype policy: {keras.config.dtype_policy().name}",
            f"NumPy {np.__version__}; platform: {platform.platform()}",
        ]
    return "\n".join(lines)


def sync_devices() -> None:
    """Waits for queued device work so the clock stops when the step is done.

    On CPU, a tf.function call returns once its ops have run, so there is nothing to wait for;
    GPU kernels are launched asynchronously and would be timed only up to their launch.
    """
    if tf.config.list_physical_devices("GPU"):
        tf.test.experimental.sync_devices()


def measure_interleaved(variants: Mapping[str, Step], rounds: int, warmup: int,
                        repeats: int = 1, seed: int = 0,
                        progress: Callable[[int], None] | None = None) -> dict[str, Samples]:
    """`timing.measure_interleaved` for TensorFlow steps: the clocks stop once the devices
    are done."""
    return timing.measure_interleaved(variants, rounds, warmup, repeats, seed, progress,
                                      sync=sync_devices)


def seed_everything(seed: int) -> None:
    """Same initial weights and inputs for every variant and every run."""
    keras.utils.set_random_seed(seed)
