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
import pathlib
import signal
import sys
import tempfile
import textwrap

from training import cli
from training.errors import Stopped, UsageError
from training.presets import PRESETS, SEMANTICS_NAMES, TrainConfig, preset
from training.runs import RunFolderLock, check_run_folder, check_writable_folder, saved_config
from training.signals import SignalHandlers, StopRequest

# Flags that override a preset field of the same name (dashes for underscores).
_OVERRIDES: dict[str, tuple[type, str]] = {
    "dataset": (str, "data set: cifar10, stl10, celeb_a, imagenet2012, folder, npz"),
    "data_dir": (str, "TFDS data dir, image folder / .tar.gz, or .npz/.npy file"),
    "split": (str, "the data set's split to train on (a TFDS split, a subfolder of a folder, "
              "x_<split> of an .npz)"),
    "image_size": (int, "image side in pixels"),
    "crop_size": (int, "side of the centred square cut before resizing (default: largest)"),
    "arch": (str, "cnn or resnet"),
    "norm": (str, "discriminator normalization: none, sn, ssn, bsn, bssn, strict"),
    "scale": (float, "the constant c of SSN/BSSN"),
    "power_iterations": (int, "power-iteration steps per D update"),
    "differentiable_power_iteration": (
        cli.boolean, "true: back-propagate through the power iteration (official code); false: "
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
    "reuse_latents": (cli.boolean, "G step reuses the last D step's latents (official CNN)"),
    "generator_bn_updates": (str, "every_forward (official CNN) or generator_step "
                             "(official ResNet): when G's BatchNorm statistics move"),
    "antialias": (cli.boolean, "antialiased resizing (false: plain bilinear, official ImageNet)"),
    "shuffle_buffer": (int, "images the real-batch shuffle draws from (None: all, a "
                       "uniform shuffle each pass, where they fit in memory; else 10,000)"),
    "seed": (cli.random_seed, "seed of weights, latents and data order"),
    "precision": (str, "float32; bfloat16 (mixed_bfloat16: bfloat16 compute, float32 "
                  "variables, sigmas and losses); float16 (mixed_float16, dynamic loss "
                  "scaling)"),
    "strategy": (str, "auto, default, mirrored, multi_worker or tpu"),
    "log_every": (int, "steps per metrics row / progress-bar epoch"),
    "input_gradient_every": (int, "measure ||grad_x D|| on every k-th step (1: every step; "
                             "None: every 10th, or every step where --log-every < 10)"),
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
    parser = cli.parser("training.train", __doc__)
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
    # Before 0.3; kept so that old command lines still run (as --precision float16/float32).
    parser.add_argument("--mixed-precision", action=argparse.BooleanOptionalAction,
                        default=None, help=argparse.SUPPRESS)
    parser.add_argument("--jit-compile", action=argparse.BooleanOptionalAction, default=None,
                        help="compile the train step with XLA (default: the preset's)")
    parser.add_argument("--export", action=argparse.BooleanOptionalAction, default=True,
                        help="export the generator at the end")
    parser.add_argument("--export-only", action="store_true",
                        help="export the latest checkpoint of the run in --out (with the "
                        "run's own config.json) and exit")
    parser.add_argument("--saved-models", default="saved_models",
                        help="folder of exported generators")
    defaults = preset("cifar10-cnn-bssn")
    for name, (kind, text) in _OVERRIDES.items():
        options = {"action": cli.BooleanFlag} if kind is cli.boolean else {"type": kind}
        # Absent unless given: the preset's value applies, which the formatter cannot show.
        parser.add_argument(f"--{name.replace('_', '-')}", **options, default=argparse.SUPPRESS,
                            help=f"{text} (main preset: {getattr(defaults, name)})")
    return parser


def resolve_config(args: argparse.Namespace) -> TrainConfig:
    """The preset's configuration with every flag given on the command line applied, under
    the semantics of the architecture the flags give."""
    overrides = {name: getattr(args, name) for name in (*_OVERRIDES, "jit_compile")
                 if getattr(args, name, None) is not None}
    if args.mixed_precision is not None:
        old_flag = "--mixed-precision" if args.mixed_precision else "--no-mixed-precision"
        precision = "float16" if args.mixed_precision else "float32"
        if overrides.setdefault("precision", precision) != precision:
            raise UsageError(f"{old_flag} and --precision {overrides['precision']} disagree; "
                             "give --precision alone (--mixed-precision is its old name).")
        print(f"note: {old_flag} is now --precision {precision}.", file=sys.stderr)
    return preset(args.preset, args.semantics, **overrides)


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


def _export_only(args: argparse.Namespace, run_dir: pathlib.Path) -> int:
    """Exports what the run trained: its own config.json, never the flags (bar the name)."""
    config = saved_config(run_dir)
    if getattr(args, "export_name", None) is not None:
        config = dataclasses.replace(config, export_name=args.export_name)
    cli.start_tensorflow()  # quietly, before the checks of names load it
    config.validate()
    from training.run_export import check_export_target, export_run

    check_export_target(config, run_dir, args.saved_models)
    with RunFolderLock(run_dir):
        path, step = export_run(config, run_dir, args.saved_models)
    print(f"exported step {step} to {path}")
    return 0


def _train(args: argparse.Namespace) -> int:
    if args.list_presets:
        print(presets_table())
        return 0
    run_dir = pathlib.Path(args.out or pathlib.Path("runs") / args.preset)
    if args.export_only:
        return _export_only(args, run_dir)
    config = resolve_config(args)
    # Before anything is written; the values at once, not after TensorFlow's start.
    config.validate_values()
    check_writable_folder(run_dir, "--out")
    if config.strategy != "multi_worker":
        return _start_and_train(args, config, run_dir)
    # A signal reaches one worker of a cluster: from here on it is noted, and the workers act
    # on it together, where they agree (callbacks.AgreedStop), or after the export.
    stop_request = StopRequest()
    with SignalHandlers(stop_request.note):
        return _start_and_train(args, config, run_dir, stop_request)


def _start_and_train(args: argparse.Namespace, config: TrainConfig, run_dir: pathlib.Path,
                     stop_request: StopRequest | None = None) -> int:
    # The first of the start's phases (training.trainer says the others): 5-20 s.
    print("starting TensorFlow...", flush=True)
    cli.start_tensorflow()  # quietly, before the checks of names load it
    config.validate_names()
    from training.distribute import make_strategy, writes_run_files
    from training.run_export import check_export_target
    from training.trainer import check_data

    if config.strategy == "multi_worker":
        # First: it configures TensorFlow's collective ops, which must precede any other op
        # (the data check below reads images).
        make_strategy(config.strategy)
    if args.export:
        check_export_target(config, run_dir, args.saved_models)
    # Before the run folder is made: a mistaken --data-dir must leave nothing to refuse the
    # corrected command.
    check_data(config)
    if not writes_run_files(config.strategy):
        return _train_as_other_worker(args, config, run_dir, stop_request)
    with RunFolderLock(run_dir):
        check_run_folder(run_dir, config, args.force)
        return _train_and_export(args, config, run_dir, args.saved_models, stop_request)


def _train_as_other_worker(args: argparse.Namespace, config: TrainConfig,
                           run_dir: pathlib.Path, stop_request: StopRequest) -> int:
    """A multi-worker task that is not the chief: it runs every step, save and export with
    the chief (they run collectives) but writes to a scratch folder it deletes at the end, and
    resumes from the chief's run folder, so the run folder holds one run's files."""
    check_run_folder(run_dir, config, args.force)
    with tempfile.TemporaryDirectory(prefix="keras_bssn-worker-") as scratch:
        scratch_dir = pathlib.Path(scratch)
        return _train_and_export(args, config, scratch_dir / run_dir.name,
                                 scratch_dir / "saved_models", stop_request,
                                 resume_from=run_dir)


def _train_and_export(args: argparse.Namespace, config: TrainConfig, run_dir: pathlib.Path,
                      saved_models: str | pathlib.Path, stop_request: StopRequest | None,
                      resume_from: pathlib.Path | None = None) -> int:
    from training.run_export import export
    from training.trainer import train

    result = train(config, run_dir, resume_from, stop_request)
    if result.diverged:
        print(f"error: stopped, {result.diverged}. The last good checkpoint is "
              f"{result.checkpoint}; lower the learning rates or change --scale and "
              "resume, or start a new --out.", file=sys.stderr)
        return cli.EXIT_NON_FINITE
    if args.export:
        path = export(result.gan, config, run_dir, saved_models)
        if resume_from is None:
            print(f"Exported the generator to {path}")
    if stop_request and stop_request.signum:
        # Noted after the workers' last agreed check: the export, which they run together,
        # is done, and no collective follows; each stops with what reached it.
        print(f"Stopped by {signal.Signals(stop_request.signum).name} after the run's end: "
              f"it is complete at step {result.step}.", file=sys.stderr)
        raise Stopped(stop_request.signum)
    return 0


def main(argv: list[str] | None = None) -> int:
    return cli.run(_train, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
