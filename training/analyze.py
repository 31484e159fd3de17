"""The paper's analysis, reproducible: `python -m training.analyze <experiment> [--flags]`.

Experiments (each writes `<experiment>.csv` and `<experiment>.png` to `--out`, default
`runs/analysis/<experiment>`):

- `init-variance`: per layer of a reference discriminator, the variance of the kernel the
  forward pass uses with no normalization (the reference init: N(0, 0.02^2) for the CNN), with
  LeCun init, and after SN, strict SN, BSN and BSSN (converged sigmas), next to the LeCun, Xavier
  and Kaiming variances.
- `gradients`: per-layer norms of D's weight gradients at initialization and after each of the
  first `--steps` training steps on real data, per normalization and seed: which explode, which
  vanish.
- `collapse`: the seed study of `training.experiments.collapse`: runs of the CIFAR-10 CNN per cell
  (normalization, scale, semantics) and seed, and when (if ever) each collapsed. Resumable
  like `sweep`.
- `sweep`: short training runs over normalizations x scales x seeds (the paper's grid at a CPU
  size), with KID over steps. Each run is a `training.train` run folder under `runs/`, so an
  interrupted sweep resumes where it stopped and finished runs are skipped; all results are
  gathered in one CSV. Without the Inception graph (`KERAS_BSSN_INCEPTION_GRAPH`) KID is
  computed in pixel space (images resized to `--pixel-size`): it ranks runs against each
  other, but its values are NOT comparable with published KIDs; the plot says which was used.
- `artifacts`: how much of a run's samples is one pattern at the same place in every image
  (`training.experiments.artifacts`), at the checkpoints `--steps`, with the generator's
  BatchNorm in inference mode and in training mode, next to real images; with the sample
  diversity the training logs, in both modes.
- `feature-distance`: the Fréchet distance of each run's samples (newest checkpoint) to the
  real training images in the features of `--extractor` (a classifier of
  `training.feature_classifier`), next to real test images, blurred test images and noise
  (`training.experiments.feature_distance`).
- `input-gradient-sampling`: from a run that logged every step's `||grad_x D||`, the rows a
  run measuring every `--every`-th step would log, against the every-step rows, in standard
  errors (`training.experiments.input_gradient_sampling`).

Data defaults to the shared CIFAR-10 JPEGs (`../shared/data/cifar10-jpeg.tar.gz`) when they
exist, else TFDS `cifar10`.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
from typing import TYPE_CHECKING, Any

from training import cli
from training.errors import UsageError
from training.experiments.cells import DEFAULT_CELLS, Cell
from training.presets import TrainConfig
from training.runs import check_writable_folder

if TYPE_CHECKING:
    from training.experiments.training_runs import TrainingSetup

SHARED_CIFAR10 = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" / \
    "cifar10-jpeg.tar.gz"


def main(argv: list[str] | None = None) -> int:
    """Runs `python -m training.analyze` on `argv`; returns the exit code."""
    return cli.run(_analyze, build_parser(), argv)


def _analyze(args: argparse.Namespace) -> int:
    _check_settings(args)
    for line in _EXPERIMENTS[args.experiment](args):
        print(line)
    print(f"wrote {args.out}/{args.experiment}.csv and .png")
    return 0


def _check_settings(args: argparse.Namespace) -> None:
    """Refuses every setting the experiment cannot run with, before it loads data, builds a
    model or writes anything: first what needs no TensorFlow (flags that do not go together,
    cells, the output folder), then each run's configuration, and the data it trains on."""
    check_writable_folder(args.out, "--out")
    if args.experiment == "sweep" and args.steps % args.eval_every:
        # The last step's KID is each run's result.
        raise UsageError(f"--steps {args.steps} must be a multiple of --eval-every "
                         f"{args.eval_every}.")
    if args.experiment == "collapse":
        for spec in args.cells:
            Cell.parse(spec)
    cli.start_tensorflow()  # quietly, before the experiments load it
    configs = _RUN_CONFIGS[args.experiment](args)
    for config in configs:
        config.validate()
    if args.experiment in ("gradients", "sweep", "collapse"):
        from training.trainer import check_data

        check_data(configs[0])  # the runs share their data


# The configurations of the runs (or of the networks) each experiment would make, for
# `_check_settings`; each function also checks what is the experiment's own.


def _init_variance_configs(args: argparse.Namespace) -> list[TrainConfig]:
    # The discriminator's architecture and size, and the scale, as training takes them.
    return [TrainConfig(arch=args.arch, image_size=args.image_size, scale=args.scale)]


def _gradients_configs(args: argparse.Namespace) -> list[TrainConfig]:
    from training.experiments import gradients

    return gradients.run_configs(_training_setup(args), args.norms, args.scale, args.seeds)


def _sweep_configs(args: argparse.Namespace) -> list[TrainConfig]:
    from training.experiments import sweep

    return [config for _, config in sweep.planned_runs(args.out, _training_setup(args),
                                                       **_sweep_settings(args))]


def _collapse_configs(args: argparse.Namespace) -> list[TrainConfig]:
    from training.experiments import collapse

    return [config for _, _, config in collapse.planned_runs(**_collapse_settings(args))]


def _artifacts_configs(args: argparse.Namespace) -> list[TrainConfig]:
    from training.experiments import artifacts

    artifacts.check_settings(args.run, args.steps, args.lattice_period)
    return []  # the run's own configuration was checked when it trained


def _feature_distance_configs(args: argparse.Namespace) -> list[TrainConfig]:
    from training.experiments import feature_distance

    return feature_distance.check_settings(args.runs)


def _input_gradient_sampling_configs(args: argparse.Namespace) -> list[TrainConfig]:
    from training.experiments import input_gradient_sampling

    input_gradient_sampling.check_settings(args.run, args.every, args.row_steps)
    return []  # the run's own configuration was checked when it trained


_RUN_CONFIGS = {"init-variance": _init_variance_configs, "gradients": _gradients_configs,
                "sweep": _sweep_configs, "collapse": _collapse_configs,
                "artifacts": _artifacts_configs, "feature-distance": _feature_distance_configs,
                "input-gradient-sampling": _input_gradient_sampling_configs}


# Each experiment: run it with the flags, return the summary lines to print. Each imports its
# module when it runs, so that the command line is parsed before TensorFlow starts.


def _init_variance(args: argparse.Namespace) -> list[str]:
    from training.experiments import init_variance

    rows = init_variance.run(args.out, args.arch, args.image_size, args.scale, args.seeds,
                             args.power_iterations)
    return init_variance.summary(rows)


def _gradients(args: argparse.Namespace) -> list[str]:
    from training.experiments import gradients

    rows = gradients.run(args.out, _training_setup(args), args.norms, args.scale, args.seeds,
                         args.num_images, args.warm_up)
    return gradients.summary(rows)


def _sweep(args: argparse.Namespace) -> list[str]:
    from training.experiments import sweep

    rows = sweep.run(args.out, _training_setup(args), **_sweep_settings(args))
    return sweep.summary(rows)


def _collapse(args: argparse.Namespace) -> list[str]:
    from training.experiments import collapse

    rows = collapse.run(args.out, **_collapse_settings(args))
    return collapse.cell_verdicts(rows, args.steps)


def _artifacts(args: argparse.Namespace) -> list[str]:
    from training.experiments import artifacts

    return artifacts.summary(artifacts.run(args.out, args.run, args.steps, args.num_images,
                                           args.lattice_period))


def _feature_distance(args: argparse.Namespace) -> list[str]:
    from training.experiments import feature_distance

    return feature_distance.summary(feature_distance.run(
        args.out, args.extractor, args.runs, args.dataset, args.data_dir, args.num))


def _input_gradient_sampling(args: argparse.Namespace) -> list[str]:
    from training.experiments import input_gradient_sampling

    return input_gradient_sampling.summary(input_gradient_sampling.run(
        args.out, args.run, args.every, args.row_steps))


_EXPERIMENTS = {"init-variance": _init_variance, "gradients": _gradients, "sweep": _sweep,
                "collapse": _collapse, "artifacts": _artifacts,
                "feature-distance": _feature_distance,
                "input-gradient-sampling": _input_gradient_sampling}


def _sweep_settings(args: argparse.Namespace) -> dict[str, Any]:
    return {"norms": args.norms, "scales": args.scales, "seeds": args.seeds,
            "eval_every": args.eval_every, "kid_samples": args.kid_samples,
            "kid_real": args.kid_real, "extractor": args.extractor,
            "pixel_size": args.pixel_size}


def _collapse_settings(args: argparse.Namespace) -> dict[str, Any]:
    return {"cell_specs": args.cells, "seeds": args.seeds, "steps": args.steps,
            "log_every": args.log_every, "dataset": args.dataset, "data_dir": args.data_dir,
            "batch_size": args.batch_size, "jit_compile": args.jit_compile}


def _training_setup(args: argparse.Namespace) -> TrainingSetup:
    from training.experiments.training_runs import TrainingSetup

    return TrainingSetup(dataset=args.dataset, data_dir=args.data_dir, arch=args.arch,
                         image_size=args.image_size, steps=args.steps,
                         batch_size=args.batch_size)


# The command line.


def build_parser() -> argparse.ArgumentParser:
    """The parser of `python -m training.analyze`: a subcommand per experiment."""
    parser = cli.parser("training.analyze", __doc__)
    experiments = parser.add_subparsers(dest="experiment", required=True)
    formatter = {"formatter_class": parser.formatter_class}

    init = experiments.add_parser("init-variance", help="weight variance at initialization",
                                   **formatter)
    _add_common_flags(init, seeds=[0])
    _add_scale_flag(init)
    init.add_argument("--power-iterations", type=cli.positive_int, default=100,
                      help="power-iteration steps to converge the sigmas")

    gradient = experiments.add_parser("gradients", help="D's weight-gradient norms over steps",
                                      **formatter)
    _add_common_flags(gradient, seeds=[0, 1, 2])
    _add_scale_flag(gradient)
    _add_training_flags(gradient, ["none", "sn", "strict", "bsn", "bssn"], steps=100)
    gradient.add_argument("--num-images", type=cli.positive_int, default=64,
                          help="real (and generated) images per measurement")
    gradient.add_argument("--warm-up", type=cli.non_negative_int, default=100,
                          help="power-iteration steps before training, so that sigmas start "
                               "converged (0: random vectors, as the reference code)")

    grid = experiments.add_parser("sweep", help="short training runs, KID over steps",
                                  **formatter)
    _add_common_flags(grid, seeds=[0, 1, 2])
    _add_training_flags(grid, ["sn", "bsn"], steps=2000)
    grid.add_argument("--scales", type=cli.positive_float, nargs="+", default=[0.7, 1.0, 1.2, 1.6, 2.0],
                      help="values of c (SN at c != 1 is SSN, BSN is BSSN)")
    grid.add_argument("--eval-every", type=cli.positive_int, default=500,
                      help="steps between KIDs")
    grid.add_argument("--kid-samples", type=cli.sample_count, default=2000,
                      help="generated images")
    grid.add_argument("--kid-real", type=cli.sample_count, default=2000, help="real images")
    grid.add_argument("--extractor", default="auto",
                      help="auto (the Inception graph if KERAS_BSSN_INCEPTION_GRAPH is set, "
                           "else pixels), pixels, or what training.train's --extractor takes")
    grid.add_argument("--pixel-size", type=cli.positive_int, default=16,
                      help="side of the images whose pixels are the 'pixels' features")

    study = experiments.add_parser("collapse", help="seed study of collapse per setting",
                                   **formatter)
    _add_out_flag(study)
    study.add_argument("--seeds", type=cli.random_seed, nargs="+", default=[0, 1, 2, 3, 4],
                       help="seeds")
    _add_data_flags(study)
    study.add_argument("--cells", nargs="+", default=list(DEFAULT_CELLS),
                       help="NORM:SCALE:SEMANTICS[+SETTING=VALUE...] per cell")
    _add_length_and_batch_flags(study, steps=1500)
    study.add_argument("--log-every", type=cli.positive_int, default=50,
                       help="steps between log rows")
    study.add_argument("--jit-compile", action=argparse.BooleanOptionalAction, default=False,
                       help="XLA-compile every run's train step (the same computation up to "
                            "rounding; faster on some CPUs, slower on others)")

    pattern = experiments.add_parser(
        "artifacts", help="a pattern repeated in every sample; BatchNorm mode's part",
        **formatter)
    _add_out_flag(pattern)
    pattern.add_argument("run", type=pathlib.Path, help="a training run folder")
    pattern.add_argument("--steps", type=cli.non_negative_int, nargs="+", default=[0],
                         help="checkpoint steps to measure (0: the generator as initialized)")
    pattern.add_argument("--num-images", type=cli.sample_count, default=64,
                         help="samples (the run's grid latents), and real images: the "
                              "diversity's reference batch and as many more to measure")
    pattern.add_argument("--lattice-period", type=cli.positive_int, default=8,
                         help="period in pixels of the lattice the upsamplings leave (8 for "
                              "the CNN's three stride-2 transposed convolutions)")

    distance = experiments.add_parser(
        "feature-distance", help="Fréchet distance in a classifier's features: runs and "
        "baselines", **formatter)
    _add_out_flag(distance)
    _add_data_flags(distance)
    distance.add_argument("--extractor", required=True,
                          help="the .keras model of training.feature_classifier (or another "
                               "extractor training.evaluate takes)")
    distance.add_argument("--runs", type=pathlib.Path, nargs="*", default=[],
                          help="training run folders, each measured at its newest checkpoint "
                               "(default: none, only the baselines)")
    distance.add_argument("--num", type=cli.sample_count, default=10_000,
                          help="images of each set: the real train images, the baselines and "
                               "each run's samples")

    sampling = experiments.add_parser(
        "input-gradient-sampling", help="||grad_x D|| measured every k-th step against every "
        "step", **formatter)
    _add_out_flag(sampling)
    sampling.add_argument("run", type=pathlib.Path,
                          help="a run folder trained with --log-every 1 --input-gradient-every 1")
    sampling.add_argument("--every", type=cli.positive_int, default=10,
                          help="measure on every k-th step (training's default: 10)")
    sampling.add_argument("--row-steps", type=cli.positive_int, default=100,
                          help="steps per metrics row (training's default --log-every: 100)")
    return parser


def _add_out_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=pathlib.Path,
                        # The subcommand is the last word of its parser's prog.
                        default=pathlib.Path("runs") / "analysis" / parser.prog.split()[-1],
                        help="output folder")


def _add_common_flags(parser: argparse.ArgumentParser, seeds: list[int]) -> None:
    _add_out_flag(parser)
    parser.add_argument("--arch", default="cnn", help="cnn or resnet")
    parser.add_argument("--image-size", type=cli.positive_int, default=32,
                        help="image side in pixels")
    parser.add_argument("--seeds", type=cli.random_seed, nargs="+", default=seeds,
                        help="seeds")


def _add_scale_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--scale", type=cli.positive_float, default=1.2,
                        help="the constant c of SSN/BSSN (the other normalizations use 1)")


def _add_data_flags(parser: argparse.ArgumentParser) -> None:
    # The shared CIFAR-10 JPEGs when this checkout has them: no download on a training machine.
    if SHARED_CIFAR10.exists():
        dataset, data_dir = "folder", str(SHARED_CIFAR10)
    else:
        dataset, data_dir = "cifar10", None
    parser.add_argument("--dataset", default=dataset, help="data set: cifar10, folder, npz, ...")
    parser.add_argument("--data-dir", default=data_dir, help="image folder / .tar.gz / .npz")


def _add_training_flags(parser: argparse.ArgumentParser, norms: list[str], steps: int) -> None:
    _add_data_flags(parser)
    parser.add_argument("--norms", nargs="+", default=norms, help="normalizations")
    _add_length_and_batch_flags(parser, steps)


def _add_length_and_batch_flags(parser: argparse.ArgumentParser, steps: int) -> None:
    parser.add_argument("--steps", type=cli.positive_int, default=steps,
                        help="generator steps per run")
    parser.add_argument("--batch-size", type=cli.positive_int, default=64,
                        help="discriminator batch")


if __name__ == "__main__":
    sys.exit(main())
