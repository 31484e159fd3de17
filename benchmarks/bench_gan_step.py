"""Training-step time of the CIFAR10 CNN GAN with no normalization, our SN and our BSSN.

One step is what `fit` runs per batch: `training.gan.GAN.train_step` (one discriminator update
on a real batch and a generated one, one generator update, the logged metrics and sigmas),
compiled by Keras (`make_train_function`) and fed from a tf.data iterator. It is called
directly, so `fit`'s callbacks and progress bar are left out. Each sample times
`--steps-per-round` consecutive steps.

The reference logs ||grad_x D(x)|| every step, which costs a second backward pass through D;
`track_input_gradients` switches it, and both settings are timed by default.

`--xla-comparison` times instead the main job's step, the GAN that `training.train --preset
cifar10-cnn-bssn` builds (BSSN c = 1.2, `||grad_x D||` logging on), in both training
semantics (official and `--semantics keras`), each compiled with and without XLA,
interleaved: what `jit_compile` saves or costs on this CPU, and what each semantics costs.

Run from the repository root:

    python -m benchmarks.bench_gan_step [--rounds N] [--no-input-gradients] [--jit]
    python -m benchmarks.bench_gan_step --xla-comparison [--rounds N]
"""

from __future__ import annotations

import argparse
import dataclasses
import pathlib
import sys
from typing import Sequence

if __package__ in (None, ""):  # run as a file: make `benchmarks` importable
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from benchmarks import common  # noqa: E402  (sets the backend before Keras is imported)
from benchmarks.common import IMAGE_SIZE, NORM_LABELS  # noqa: E402

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from training.gan import GAN  # noqa: E402
from training.networks.cnn import cnn_generator  # noqa: E402
from training.presets import preset, semantics  # noqa: E402
from training.building import build_gan as build_preset_gan  # noqa: E402

LATENT_DIM = 128
NORMS = ("none", "sn", "bssn")
TRACKING = {"on": True, "off": False}  # --input-gradients value -> track_input_gradients


def variant_name(norm: str, input_gradients: str) -> str:
    return f"{norm}/grad-{input_gradients}"


def build_gan(norm: str, track_input_gradients: bool, jit: bool) -> GAN:
    """The GAN of the paper's CIFAR10 setting (a): Adam(1e-4, 0.5, 0.999), hinge, n_dis 1."""
    gan = GAN(cnn_generator(IMAGE_SIZE, LATENT_DIM), common.build_discriminator(norm))
    gan.compile(d_optimizer=keras.optimizers.Adam(1e-4, beta_1=0.5, beta_2=0.999),
                g_optimizer=keras.optimizers.Adam(1e-4, beta_1=0.5, beta_2=0.999),
                loss="hinge", n_dis=1, track_input_gradients=track_input_gradients,
                jit_compile=jit)
    return gan


def real_images(batch_size: int, seed: int) -> tf.data.Dataset:
    """One synthetic batch in [-1, 1], repeated: the input pipeline costs nothing to time."""
    images = tf.random.uniform((batch_size, IMAGE_SIZE, IMAGE_SIZE, 3), -1.0, 1.0, seed=seed)
    return tf.data.Dataset.from_tensors(images).repeat()


def train_step(gan: GAN, dataset: tf.data.Dataset) -> common.Step:
    """A call running one compiled training step, exactly as `fit` runs it."""
    # One short fit builds the optimizers' variables and the compiled train function (fit
    # builds them before the first step; the function is cached on the model afterwards).
    gan.fit(dataset, steps_per_epoch=1, epochs=1, verbose=0, shuffle=False)
    function = gan.make_train_function()
    iterator = iter(dataset)
    return lambda: function(iterator)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Train-step time of the CIFAR10 CNN GAN with no normalization, our SN "
                    "and our BSSN in the discriminator.")
    # ~2 s per step per variant on a loaded 2-core CPU, 6 variants: 20 rounds ~ 5-10 min. One
    # step per sample and more rounds: more paired samples tighten the median's CI.
    common.add_common_arguments(parser, default_rounds=20, default_warmup=3)
    parser.add_argument("--steps-per-round", type=int, default=1,
                        help="consecutive train steps per timed sample (default: 1)")
    parser.add_argument("--input-gradients", choices=("on", "off", "both"), default="both",
                        help="time with the ||grad_x D|| logging on (the reference), off, or "
                             "both (default)")
    parser.add_argument("--no-input-gradients", dest="input_gradients", action="store_const",
                        const="off", help="same as --input-gradients off "
                                          "(track_input_gradients=False)")
    parser.add_argument("--xla-comparison", action="store_true",
                        help="time instead the main job's step in both semantics, without "
                             "and with XLA")
    return parser


SEMANTICS = ("official", "keras")
XLA_LABELS = {f"{name}/xla-{state}": f"main job, {name} semantics, XLA {state}"
              for name in SEMANTICS for state in ("off", "on")}


def build_xla_variants(args: argparse.Namespace) -> dict[str, common.Step]:
    """The main preset's compiled train step for each semantics, without and with XLA."""
    steps = {}
    for name in SEMANTICS:
        for jit in (False, True):
            config = dataclasses.replace(preset("cifar10-cnn-bssn"), **semantics(name),
                                         batch_size=args.batch_size, seed=args.seed,
                                         jit_compile=jit)
            common.seed_everything(args.seed)
            dataset = real_images(config.batch_size * config.n_dis, args.seed)
            steps[f"{name}/xla-{'on' if jit else 'off'}"] = train_step(build_preset_gan(config),
                                                                      dataset)
    return steps


def input_gradient_settings(args: argparse.Namespace) -> list[str]:
    return ["on", "off"] if args.input_gradients == "both" else [args.input_gradients]


def build_variants(args: argparse.Namespace) -> dict[str, common.Step]:
    return train_steps(args, {variant_name(norm, setting): (norm, TRACKING[setting], args.jit)
                              for setting in input_gradient_settings(args) for norm in NORMS})


def train_steps(args: argparse.Namespace, gans: dict[str, tuple[str, bool, bool]]
                ) -> dict[str, common.Step]:
    """A compiled train step per name, for GANs given as (norm, track_input_gradients, jit)."""
    dataset = real_images(args.batch_size, args.seed)
    steps = {}
    for name, (norm, track_input_gradients, jit) in gans.items():
        # Same seed for every variant: same initial weights, so the same work per step.
        common.seed_everything(args.seed)
        steps[name] = train_step(build_gan(norm, track_input_gradients, jit), dataset)
    return steps


def setting_samples(samples: dict[str, common.Samples], setting: str
                    ) -> dict[str, common.Samples]:
    """The samples of one ||grad_x D|| setting, keyed by norm (for a table per setting)."""
    return {clock: {norm: by_variant[variant_name(norm, setting)] for norm in NORMS}
            for clock, by_variant in samples.items()}


def print_input_gradient_cost(samples: dict[str, common.Samples]) -> None:
    """How much the ||grad_x D|| logging adds to each GAN's step (same rounds, paired)."""
    print("\n== cost of the ||grad_x D|| logging: step with it vs without (paired per round)")
    for clock, by_variant in samples.items():
        for norm in NORMS:
            cost = common.overhead_percent(by_variant, variant_name(norm, "on"),
                                           variant_name(norm, "off"))
            print(f"{clock:>4}: {NORM_LABELS[norm]}: {cost.median:+.1f}% "
                  f"({common.format_ci(cost, '%')})")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    common.check_common_arguments(parser, args)
    if args.steps_per_round < 1:
        parser.error("--steps-per-round must be >= 1")

    if args.xla_comparison:
        print(common.environment_report(False, args.backend_info))
        samples = common.measure_interleaved(build_xla_variants(args), args.rounds,
                                             args.warmup, repeats=args.steps_per_round,
                                             seed=args.seed,
                                             progress=common.print_progress(args.rounds))
        common.print_report(samples, "official/xla-off", XLA_LABELS, throughput=True)
        return 0
    print(common.environment_report(args.jit, args.backend_info))
    steps = build_variants(args)
    print(f"GAN: CNN G + D {IMAGE_SIZE}x{IMAGE_SIZE}, batch {args.batch_size}, hinge, n_dis 1; "
          f"{args.rounds} interleaved rounds of {args.steps_per_round} step(s) per variant after "
          f"{args.warmup} warm-up steps each")
    samples = common.measure_interleaved(steps, args.rounds, args.warmup,
                                         repeats=args.steps_per_round, seed=args.seed,
                                         progress=common.print_progress(args.rounds))

    settings = input_gradient_settings(args)
    for setting in settings:
        print(f"\n#### ||grad_x D|| logging {setting} "
              f"(track_input_gradients={TRACKING[setting]})")
        common.print_report(setting_samples(samples, setting), "none", NORM_LABELS,
                            throughput=True)
    if len(settings) == 2:
        print_input_gradient_cost(samples)
    return 0


if __name__ == "__main__":
    sys.exit(main())
