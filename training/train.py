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
import pathlib
import signal
import sys
from typing import Any

from training.presets import PRESETS, RESUMABLE_CHANGES, TrainConfig, preset

EXIT_INTERRUPTED, EXIT_BAD_CONFIG, EXIT_NON_FINITE = 130, 2, 3

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
    parser.add_argument("--force", action="store_true",
                        help="resume even if the configuration changed")
    parser.add_argument("--mixed-precision", action="store_true", default=None,
                        help="mixed_float16 compute")
    parser.add_argument("--jit-compile", action="store_true", default=None, help="XLA")
    parser.add_argument("--no-export", action="store_true",
                        help="do not export the generator at the end")
    parser.add_argument("--export-only", action="store_true",
                        help="export the latest checkpoint of the run and exit")
    parser.add_argument("--saved-models", default="saved_models",
                        help="folder of exported generators")
    for name, (kind, text) in _OVERRIDES.items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=kind, help=text)
    return parser


def resolve_config(args: argparse.Namespace) -> TrainConfig:
    """The preset's configuration with every flag given on the command line applied."""
    config = preset(args.preset)
    overrides = {name: getattr(args, name) for name in (*_OVERRIDES, "mixed_precision",
                                                        "jit_compile")
                 if getattr(args, name) is not None}
    return dataclasses.replace(config, **overrides)


def _config_changes(saved: dict[str, Any], config: TrainConfig) -> list[str]:
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

    return keras.optimizers.Adam(learning_rate, beta_1=config.beta1, beta_2=config.beta2)


def build_gan(config: TrainConfig):
    """The compiled GAN of a configuration (call inside the strategy's scope)."""
    from training.gan import GAN
    from training.networks import build_networks

    generator, discriminator = build_networks(
        config.arch, config.image_size, latent_dim=config.latent_dim, norm=config.norm,
        scale=config.scale, power_iterations=config.power_iterations)
    gan = GAN(generator, discriminator, ema_decay=config.ema_decay, seed=config.seed)
    gan.compile(d_optimizer=_optimizer(config.d_lr, config),
                g_optimizer=_optimizer(config.g_lr, config), loss=config.loss,
                n_dis=config.n_dis, gradient_penalty=config.gradient_penalty,
                generator_batch_size=config.generator_batch_size,
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


def _callbacks(config: TrainConfig, run_dir: pathlib.Path, checkpoint, guard) -> list:
    import keras
    import tensorflow as tf

    from training import callbacks

    writer = tf.summary.create_file_writer(str(run_dir / "logs"))
    fid = _fid_callback(config, run_dir)
    return [
        guard,
        callbacks.StopAtStep(config.steps),
        *([fid] if fid else []),  # before the loggers, so they see its scores
        callbacks.SampleGridCallback(run_dir / "samples", config.sample_every,
                                     seed=config.seed, summary_writer=writer),
        keras.callbacks.CSVLogger(str(run_dir / "metrics.csv"), append=True),
        callbacks.StepScalarLogger(writer),
        callbacks.CheckpointCallback(checkpoint, config.checkpoint_every,
                                     is_healthy=lambda: guard.triggered is None),
    ]


def export(gan, config: TrainConfig, run_dir: pathlib.Path, saved_models: str) -> pathlib.Path:
    """Exports the run's sampling generator to `saved_models/<export_name or run name>`."""
    from training.export import export_generator

    name = config.export_name or run_dir.name
    metadata = {"normalization": config.norm, "scale": config.scale, "dataset": config.dataset,
                "architecture": config.arch, "step": int(gan.g_optimizer.iterations),
                "ema": config.ema_decay is not None}
    return export_generator(gan.sampling_generator, pathlib.Path(saved_models) / name, metadata)


def train(config: TrainConfig, run_dir: pathlib.Path, saved_models: str = "saved_models",
          export_at_end: bool = True, export_only: bool = False) -> int:
    """Trains (or resumes) the run in `run_dir`; returns the process exit code."""
    import keras

    from training import callbacks, data
    from training.distribute import make_strategy

    keras.utils.set_random_seed(config.seed)
    if config.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16")
    strategy = make_strategy(config.strategy)
    with strategy.scope():
        gan = build_gan(config)
        checkpoint = callbacks.RunCheckpoint(gan, run_dir / "checkpoints",
                                             config.keep_checkpoints)
        step = checkpoint.restore()
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
        # A polite kill (SIGTERM: `kill`, a cluster's preemption) saves a checkpoint like Ctrl-C.
        previous_handler = signal.signal(signal.SIGTERM, signal.default_int_handler)
        try:
            gan.fit(dataset, steps_per_epoch=config.log_every,
                    initial_epoch=step // config.log_every,
                    epochs=math.ceil(config.steps / config.log_every),
                    callbacks=_callbacks(config, run_dir, checkpoint, guard), verbose=2)
        except KeyboardInterrupt:
            print(f"\nInterrupted at step {checkpoint.step}; saved {checkpoint.save()}. "
                  "Run the same command to resume.", file=sys.stderr)
            return EXIT_INTERRUPTED
        finally:
            signal.signal(signal.SIGTERM, previous_handler)
        if guard.triggered:
            print(f"error: stopped, {guard.triggered}. The last good checkpoint is "
                  f"{checkpoint.latest}; lower the learning rates or change --scale and "
                  "resume, or start a new --out.", file=sys.stderr)
            return EXIT_NON_FINITE
    if export_at_end:
        print(f"Exported the generator to {export(gan, config, run_dir, saved_models)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.list_presets:
        for name in sorted(PRESETS):
            print(f"{name:32s} {json.dumps(PRESETS[name], sort_keys=True)}")
        return 0
    try:
        config = resolve_config(args)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_BAD_CONFIG
    run_dir = pathlib.Path(args.out or pathlib.Path("runs") / args.preset)
    prepare_run_folder(run_dir, config, args.force)
    return train(config, run_dir, args.saved_models, export_at_end=not args.no_export,
                 export_only=args.export_only)


if __name__ == "__main__":
    sys.exit(main())
