"""Train a GAN: `python -m training.train --preset cifar10-cnn-bssn [--flag value ...]`.

A run folder (`--out`, default `runs/<preset>`) holds the resolved `config.json`, `metrics.csv`,
TensorBoard logs (`logs/`), sample grids (`samples/`), checkpoints (`checkpoints/`) and, at
the end, the exported generator (`saved_models/<name>` unless `--no-export`). Running the same
command again resumes from the latest checkpoint; a changed configuration is refused unless
`--force`. Ctrl-C saves a checkpoint before stopping.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import pathlib
import signal
import sys
import textwrap
import warnings
from typing import Any

# TensorFlow's C++ start-up lines (CUDA probing on machines without a GPU, graph-optimizer
# notes) say nothing to a user; TF_CPP_MIN_LOG_LEVEL=0 shows them again.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from training.presets import (LEGACY_VALUES, PRESETS, RESUMABLE_CHANGES, SEMANTICS_NAMES,
                              TrainConfig, preset, semantics)

EXIT_BAD_CONFIG, EXIT_NON_FINITE = 2, 3
# The shell's convention: 128 + the signal's number.
EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}
EXIT_INTERRUPTED = EXIT_CODES[signal.SIGINT]


class _Stop(KeyboardInterrupt):
    """Ctrl-C or SIGTERM arrived; carries the signal's number."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise_stop(signum, frame):
    raise _Stop(signum)


class _SignalHandlers:
    """Within the block, Ctrl-C and SIGTERM go to `handler`, whatever handlers the process
    inherited (a child of a shell without job control starts with SIGINT ignored)."""

    def __init__(self, handler):
        self.handler = handler

    def __enter__(self):
        self.previous = {signum: signal.signal(signum, self.handler) for signum in EXIT_CODES}
        return self

    def __exit__(self, *exc_info):
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)


def _boolean(text: str) -> bool:
    """argparse type of a true/false flag value."""
    values = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
    if text.lower() not in values:
        raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
    return values[text.lower()]


# Flags that override a preset field of the same name (dashes for underscores).
_OVERRIDES: dict[str, tuple[type, str]] = {
    "dataset": (str, "data set: cifar10, stl10, celeb_a, imagenet2012, folder, npz"),
    "data_dir": (str, "TFDS data dir, image folder / .tar.gz, or .npz/.npy file"),
    "image_size": (int, "image side in pixels"),
    "crop_size": (int, "side of the centred square cut before resizing (default: largest)"),
    "arch": (str, "cnn or resnet"),
    "norm": (str, "discriminator normalization: none, sn, ssn, bsn, bssn, strict"),
    "scale": (float, "the constant c of SSN/BSSN"),
    "power_iterations": (int, "power-iteration steps per D update"),
    "differentiable_power_iteration": (
        _boolean, "true: back-propagate through the power iteration (official code); false: "
        "hold u and v constant (Miyato, PyTorch)"),
    "vector_updates": (str, "explicit: advance u after each D update (official code); "
                       "in_call: in D's training call"),
    "latent_dim": (int, "size of z"),
    "loss": (str, "hinge, non_saturating or wasserstein"),
    "steps": (int, "generator steps to train for (in total, across resumes)"),
    "batch_size": (int, "global batch of each discriminator update"),
    "generator_batch_size": (int, "global batch of the generator update"),
    "n_dis": (int, "discriminator updates per generator update"),
    "g_lr": (float, "generator learning rate"),
    "d_lr": (float, "discriminator learning rate"),
    "beta1": (float, "Adam beta1"),
    "beta2": (float, "Adam beta2"),
    "gradient_penalty": (float, "WGAN-GP weight (0 = off)"),
    "ema_decay": (float, "EMA of the generator weights (e.g. 0.999; off by default)"),
    "adam_epsilon": (float, "Adam epsilon (official 1e-8, Keras 1e-7)"),
    "bn_momentum": (float, "G BatchNorm momentum (official 0.9, Keras 0.99)"),
    "bn_epsilon": (float, "G BatchNorm epsilon (official 1e-5, Keras 1e-3)"),
    "initializers": (str, "official (normal; truncated for D convs) or truncated (all)"),
    "reuse_latents": (_boolean, "G step reuses the last D step's latents (official CNN)"),
    "generator_bn_updates": (str, "every_forward (official CNN) or generator_step "
                             "(official ResNet): when G's BatchNorm statistics move"),
    "antialias": (_boolean, "antialiased resizing (false: plain bilinear, official ImageNet)"),
    "seed": (int, "seed of weights, latents and data order"),
    "strategy": (str, "auto, default, mirrored, multi_worker or tpu"),
    "log_every": (int, "steps per metrics row / progress-bar epoch"),
    "sample_every": (int, "steps between sample grids"),
    "checkpoint_every": (int, "steps between checkpoints"),
    "keep_checkpoints": (int, "checkpoints to keep"),
    "fid_every": (int, "steps between FID/IS/KID evaluations (0 = off)"),
    "fid_samples": (int, "generated images for FID/KID"),
    "fid_real_samples": (int, "real images for the FID statistics"),
    "is_samples": (int, "generated images for the Inception Score"),
    "extractor": (str, "inception-2015, keras-inceptionv3, or a model/graph path"),
    "export_name": (str, "name of the export under saved_models/"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m training.train", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="cifar10-cnn-bssn",
                        help="named configuration (see --list-presets)")
    parser.add_argument("--list-presets", action="store_true", help="print the presets")
    parser.add_argument("--out", help="run folder (default: runs/<preset>)")
    parser.add_argument("--semantics", choices=SEMANTICS_NAMES,
                        help="official (the presets' default): train as the official BSN code; "
                        "keras: Miyato/PyTorch SN with Keras defaults (releases before 0.2). "
                        "Flags given with it override single settings")
    parser.add_argument("--force", action="store_true",
                        help="resume even if the configuration changed")
    parser.add_argument("--mixed-precision", action=argparse.BooleanOptionalAction,
                        default=None, help="mixed_float16 compute, with dynamic loss scaling "
                        "(default: the preset's)")
    parser.add_argument("--jit-compile", action=argparse.BooleanOptionalAction, default=None,
                        help="compile the train step with XLA (default: the preset's)")
    parser.add_argument("--no-export", action="store_true",
                        help="do not export the generator at the end")
    parser.add_argument("--export-only", action="store_true",
                        help="export the latest checkpoint of the run in --out (with the "
                        "run's own config.json) and exit")
    parser.add_argument("--saved-models", default="saved_models",
                        help="folder of exported generators")
    for name, (kind, text) in _OVERRIDES.items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=kind, help=text)
    return parser


def resolve_config(args: argparse.Namespace) -> TrainConfig:
    """The preset's configuration with every flag given on the command line applied."""
    config = preset(args.preset)
    if args.semantics:
        config = dataclasses.replace(config, **semantics(args.semantics, config.arch))
    overrides = {name: getattr(args, name) for name in (*_OVERRIDES, "mixed_precision",
                                                        "jit_compile")
                 if getattr(args, name) is not None}
    return dataclasses.replace(config, **overrides)


def _config_changes(saved: dict[str, Any], config: TrainConfig) -> list[str]:
    saved = {**LEGACY_VALUES, **saved}  # settings added since the run began
    current = dataclasses.asdict(config)
    return [f"{key}: {saved.get(key)!r} -> {current[key]!r}" for key in sorted(current)
            if key not in RESUMABLE_CHANGES and saved.get(key) != current[key]]


def prepare_run_folder(run_dir: pathlib.Path, config: TrainConfig, force: bool) -> None:
    """Creates the run folder, or checks that a resumed run trains the same thing."""
    from training.images import atomic_writer

    config_path = run_dir / "config.json"
    if config_path.exists():
        changes = _config_changes(json.loads(config_path.read_text()), config)
        if changes and not force:
            raise SystemExit(
                f"error: {run_dir} holds a run with a different configuration:\n  "
                + "\n  ".join(changes)
                + "\nUse another --out for a new run, or --force to resume with the new "
                "settings.")
    run_dir.mkdir(parents=True, exist_ok=True)
    with atomic_writer(config_path) as file:
        file.write(config.to_json().encode())


def _optimizer(learning_rate: float, config: TrainConfig):
    import keras

    return keras.optimizers.Adam(learning_rate, beta_1=config.beta1, beta_2=config.beta2,
                                 epsilon=config.adam_epsilon)


def build_gan(config: TrainConfig):
    """The compiled GAN of a configuration (call inside the strategy's scope)."""
    from training.gan import GAN
    from training.networks import build_networks

    wrapper_options = {}
    if config.norm != "none":
        wrapper_options = {"differentiable_power_iteration": config.differentiable_power_iteration,
                           "vector_updates": config.vector_updates}
    generator, discriminator = build_networks(
        config.arch, config.image_size, latent_dim=config.latent_dim, norm=config.norm,
        scale=config.scale, power_iterations=config.power_iterations,
        bn_momentum=config.bn_momentum, bn_epsilon=config.bn_epsilon,
        initializers=config.initializers, **wrapper_options)
    gan = GAN(generator, discriminator, ema_decay=config.ema_decay, seed=config.seed)
    gan.compile(d_optimizer=_optimizer(config.d_lr, config),
                g_optimizer=_optimizer(config.g_lr, config), loss=config.loss,
                n_dis=config.n_dis, gradient_penalty=config.gradient_penalty,
                generator_batch_size=config.generator_batch_size,
                reuse_latents=config.reuse_latents,
                generator_bn_updates=config.generator_bn_updates,
                jit_compile=config.jit_compile)
    return gan


def _fid_callback(config: TrainConfig, run_dir: pathlib.Path):
    """FID/IS/KID during training, or None with a note when no extractor can be loaded."""
    from training import callbacks, data
    from training.inception import make_extractor

    if config.fid_every <= 0:
        return None
    try:
        extractor = make_extractor(config.extractor)
    except Exception as error:  # an offline machine cannot download the Inception graph
        print(f"note: FID/IS/KID disabled, the feature extractor is unavailable ({error}). "
              "Give --extractor PATH (the inception-2015-12-05 .tgz/.pb or a .keras model) "
              "or --fid-every 0.", file=sys.stderr)
        return None
    return callbacks.FIDCallback(
        lambda: data.load_images(**config.data_source(), split="train").shuffle(50_000, seed=0),
        extractor, every_n_steps=config.fid_every, num_samples=config.fid_samples,
        num_real=config.fid_real_samples, num_is_samples=config.is_samples,
        dataset_name=data.source_key(**config.data_source()), split="train",
        cache_dir=str(run_dir.parent / "fid_stats_cache"))


def _diversity_reference(config: TrainConfig, num_images: int = 64):
    """The fixed real batch the sample-diversity statistic is measured against."""
    import numpy as np

    from training import data

    images = data.load_images(**config.data_source(), split="train").take(num_images)
    return np.stack(list(images.as_numpy_iterator()))


def _callbacks(config: TrainConfig, run_dir: pathlib.Path, saver, guard) -> list:
    import tensorflow as tf

    from training import callbacks

    writer = tf.summary.create_file_writer(str(run_dir / "logs"))
    fid = _fid_callback(config, run_dir)
    return [
        guard,
        callbacks.StopAtStep(config.steps),
        # Before the loggers, so that they record what these add to the logs.
        *([fid] if fid else []),
        callbacks.SampleGridCallback(run_dir / "samples", config.sample_every,
                                     seed=config.seed, summary_writer=writer),
        callbacks.SampleDiversityMonitor(_diversity_reference(config), seed=config.seed),
        callbacks.MetricsCSVLogger(run_dir / "metrics.csv"),
        callbacks.StepScalarLogger(writer),
        callbacks.ProgressLine(config.steps),
        saver,
    ]


def export(gan, config: TrainConfig, run_dir: pathlib.Path, saved_models: str) -> pathlib.Path:
    """Exports the run's sampling generator to `saved_models/<export_name or run name>`."""
    from training.callbacks.steps import generator_step
    from training.export import export_generator

    name = config.export_name or run_dir.name
    metadata = {"normalization": config.norm, "scale": config.scale, "dataset": config.dataset,
                "architecture": config.arch, "step": generator_step(gan),
                "ema": config.ema_decay is not None}
    return export_generator(gan.sampling_generator, pathlib.Path(saved_models) / name, metadata)


def train(config: TrainConfig, run_dir: pathlib.Path, saved_models: str = "saved_models",
          export_at_end: bool = True, export_only: bool = False) -> int:
    """Trains (or resumes) the run in `run_dir`; returns the process exit code."""
    import keras

    from training import callbacks, data
    from training.distribute import make_strategy

    # Our dataset is shuffled by the pipeline; fit's default shuffle=True has nothing to do.
    warnings.filterwarnings("ignore", message="`shuffle=True` was passed")
    keras.utils.set_random_seed(config.seed)
    if config.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16")
    strategy = make_strategy(config.strategy)
    with strategy.scope():
        gan = build_gan(config)
        checkpoint = callbacks.RunCheckpoint(gan, run_dir / "checkpoints",
                                             config.keep_checkpoints)
        try:
            step = checkpoint.restore()
        except callbacks.CheckpointError as error:
            print(f"error: {error}", file=sys.stderr)
            return EXIT_BAD_CONFIG
    if export_only:
        if step == 0:
            raise SystemExit(f"error: {run_dir} has no checkpoint to export.")
        print(f"exported step {step} to {export(gan, config, run_dir, saved_models)}")
        return 0
    if step:
        print(f"Resuming {run_dir} from step {step} ({checkpoint.latest}).")
    if step < config.steps:
        dataset = data.make_train_dataset(
            **config.data_source(), batch_size=config.batch_size * config.n_dis,
            seed=config.seed, start_batch=step)
        guard = callbacks.StopOnNonFiniteLoss()
        saver = callbacks.CheckpointCallback(checkpoint, config.checkpoint_every,
                                             is_healthy=lambda: guard.triggered is None)
        # Ctrl-C and a polite kill (SIGTERM: `kill`, a cluster's preemption) save a checkpoint.
        try:
            with _SignalHandlers(_raise_stop):
                gan.fit(dataset, steps_per_epoch=config.log_every,
                        initial_epoch=step // config.log_every,
                        epochs=math.ceil(config.steps / config.log_every),
                        callbacks=_callbacks(config, run_dir, saver, guard), verbose=0)
        except _Stop as stop:
            return _save_after_stop(checkpoint, gan, stop.signum)
        if saver.nonfinite_weights_step is not None:
            guard.triggered = (f"the weights became NaN or infinite by generator step "
                               f"{saver.nonfinite_weights_step}")
        if guard.triggered:
            print(f"error: stopped, {guard.triggered}. The last good checkpoint is "
                  f"{checkpoint.latest}; lower the learning rates or change --scale and "
                  "resume, or start a new --out.", file=sys.stderr)
            return EXIT_NON_FINITE
    if export_at_end:
        print(f"Exported the generator to {export(gan, config, run_dir, saved_models)}")
    return 0


class RunFolderBusy(RuntimeError):
    """Another training process holds the run folder."""


class RunFolderLock:
    """An exclusive lock on a run folder (`.lock`, `flock`), held while a run writes to it.

    The kernel drops the lock when its process ends, however it ends (kill -9 included), so a
    stale lock never blocks a resume.
    """

    def __init__(self, run_dir: pathlib.Path):
        import fcntl

        run_dir.mkdir(parents=True, exist_ok=True)
        self.file = open(run_dir / ".lock", "a+")
        try:
            fcntl.flock(self.file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self.file.seek(0)
            holder = self.file.read().strip() or "another process"
            self.file.close()
            raise RunFolderBusy(
                f"{run_dir} is in use by another training run ({holder}). Wait for it to end, "
                "or give another --out.") from None
        self.file.seek(0)
        self.file.truncate()
        self.file.write(f"pid {os.getpid()}")
        self.file.flush()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.file.close()  # closing releases the lock


def _saved_config(run_dir: pathlib.Path, args: argparse.Namespace) -> TrainConfig:
    """The configuration a run was trained with (an export reads it, never the flags, so it
    exports what was trained); only --export-name applies."""
    path = run_dir / "config.json"
    if not path.exists():
        raise ValueError(f"{run_dir} holds no run to export (no config.json); give the --out "
                         "of a run that has trained.")
    config = TrainConfig.from_dict(json.loads(path.read_text()))
    if args.export_name is not None:
        config = dataclasses.replace(config, export_name=args.export_name)
    return config


def _save_after_stop(checkpoint, gan, signum: int) -> int:
    """Saves the state a Ctrl-C or SIGTERM stopped at (when its weights are finite)."""
    from training.callbacks.checkpoints import weights_are_finite

    with _SignalHandlers(signal.SIG_IGN):  # a second Ctrl-C cannot cut the save short
        if weights_are_finite(gan):
            print(f"\nStopped by {signal.Signals(signum).name} at step {checkpoint.step}; "
                  "saving a checkpoint (further Ctrl-C is ignored until it is written)...",
                  file=sys.stderr, flush=True)
            print(f"Saved {checkpoint.save()}. Run the same command to resume.",
                  file=sys.stderr)
        else:
            print(f"\nStopped by {signal.Signals(signum).name} at step {checkpoint.step}; "
                  f"the weights are not finite, so nothing was saved. The last good "
                  f"checkpoint is {checkpoint.latest}.", file=sys.stderr)
    return EXIT_CODES[signum]


def presets_table() -> str:
    """The presets as a table, one line each."""
    header = ("preset", "dataset", "arch", "norm", "scale", "n_dis", "g_lr", "d_lr", "betas",
              "steps")
    rows = [header]
    for name in sorted(PRESETS):
        config = preset(name)
        rows.append((name, config.dataset, config.arch, config.norm, f"{config.scale:g}",
                     str(config.n_dis), f"{config.g_lr:g}", f"{config.d_lr:g}",
                     f"{config.beta1:g}/{config.beta2:g}", f"{config.steps:,}"))
    widths = [max(len(row[column]) for row in rows) for column in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip()
             for row in rows]
    note = textwrap.wrap(
        "The paper's settings (CNN presets): no suffix = (a) the scale sweep, lr 1e-4, betas "
        "0.5/0.999 (sweep c with --scale); -g*-d* = (b) the learning-rate grid at c = 1; "
        "-ndis5 = (c) n_dis 5, betas 0.5/0.9. Every preset trains as the official code does "
        "(see --semantics).", width=100)
    return "\n".join([*note, "", *lines])


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.list_presets:
        print(presets_table())
        return 0
    run_dir = pathlib.Path(args.out or pathlib.Path("runs") / args.preset)
    try:
        config = _saved_config(run_dir, args) if args.export_only else resolve_config(args)
        config.validate()  # before anything is written
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_BAD_CONFIG
    try:
        lock = RunFolderLock(run_dir)
    except RunFolderBusy as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_BAD_CONFIG
    with lock:
        if not args.export_only:
            prepare_run_folder(run_dir, config, args.force)
        return train(config, run_dir, args.saved_models, export_at_end=not args.no_export,
                     export_only=args.export_only)


if __name__ == "__main__":
    sys.exit(main())
