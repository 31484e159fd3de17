"""Forward+backward cost of spectral normalization in the SNGAN-CNN discriminator.

One step = D(images, training=True) (so every wrapper advances its power iteration), then the
gradient of the summed logits w.r.t. D's trainable weights, in one tf.function. Variants:

- none:     the plain discriminator (`cnn_discriminator(norm="none")`), the baseline;
- keras-sn: the same convs and dense wrapped in `keras.layers.SpectralNormalization` (which
            writes W / sigma into the kernel and does not back-propagate through sigma);
- sn:       our `SpectralNormalization` (`norm="sn"`);
- bssn:     our `BidirectionalSpectralNormalization` (`norm="bssn"`, scale 1.2): two power
            iterations (views 1 and 2) per conv.

Run from the repository root:

    python -m benchmarks.bench_normalization [--rounds N] [--batch-size 64] [--jit]
"""

from __future__ import annotations

import argparse
import collections
import pathlib
import re
import sys
from typing import Callable, Sequence

if __package__ in (None, ""):  # run as a file: make `benchmarks` importable
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from benchmarks import common  # noqa: E402  (sets the backend before Keras is imported)
from benchmarks import timing  # noqa: E402
from benchmarks import op_profile  # noqa: E402

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from benchmarks.common import IMAGE_SIZE, NORM_LABELS  # noqa: E402

VARIANTS = ("none", "keras-sn", "sn", "bssn")
OVERHEAD_TARGET_PERCENT = 5.0
BREAKDOWN_REPEATS = 10  # normalization-only steps take milliseconds: average a few per sample


def gradient_step(model: keras.Model, images: tf.Tensor, jit: bool) -> Callable[[], list]:
    """A call running one compiled forward+backward pass of `model` on `images`."""

    @tf.function(jit_compile=jit)
    def step(inputs: tf.Tensor) -> list:
        with tf.GradientTape() as tape:
            total = tf.reduce_sum(model(inputs, training=True))
        # Returned, not dropped: gradients nothing depends on would be pruned from the graph.
        return tape.gradient(total, model.trainable_weights)

    return lambda: step(images)


def target_verdict(overhead: timing.Summary) -> str:
    """Whether the overhead's median is below the target, given its confidence interval."""
    if overhead.ci_high < OVERHEAD_TARGET_PERCENT:
        return "met"
    if overhead.ci_low >= OVERHEAD_TARGET_PERCENT:
        return "NOT met"
    return "inconclusive (the CI contains the target: more --rounds or a quieter machine)"


def print_target(samples: dict[str, timing.Samples]) -> None:
    print(f"\nBSSN overhead target: < {OVERHEAD_TARGET_PERCENT:.0f}% of the unnormalized step")
    for clock, by_variant in samples.items():
        overhead = timing.overhead_percent(by_variant, "bssn", "none")
        print(f"{clock:>4}: {overhead.median:+.1f}% ({timing.format_ci(overhead, '%')}): "
              f"{target_verdict(overhead)}")


def _probe_input(layer: keras.layers.Layer, seed: int) -> tf.Tensor:
    """One receptive field of the layer's input: (1, *kernel_size, channels) or (1, features)."""
    inner = getattr(layer, "layer", layer)  # the wrapped layer, or the layer itself
    spatial = tuple(getattr(inner, "kernel_size", ()))
    return tf.random.normal((1, *spatial, layer.input.shape[-1]), seed=seed)


def normalization_only_step(model: keras.Model, jit: bool, seed: int) -> Callable[[], list]:
    """Like `gradient_step`, but each weighted layer of `model` runs on one receptive field.

    The convolutions then cost next to nothing while the kernel normalization (views, power
    iteration, W / sigma, the gradient through sigma) costs what it costs in the real step,
    since it depends on the kernel shape only. The difference to the same step of the
    unnormalized model is the normalization's own cost, free of the full step's noise.
    """
    layers = [layer for layer in model.layers if layer.trainable_weights]
    inputs = [_probe_input(layer, seed) for layer in layers]

    @tf.function(jit_compile=jit)
    def step() -> list:
        with tf.GradientTape() as tape:
            total = tf.add_n([tf.reduce_sum(layer(x, training=True))
                              for layer, x in zip(layers, inputs)])
        return tape.gradient(total, model.trainable_weights)

    return step


def print_breakdown(models: dict[str, keras.Model], full: dict[str, timing.Samples],
                    args: argparse.Namespace) -> None:
    """Times the normalization alone and states it in % of the full unnormalized step."""
    steps = {name: normalization_only_step(model, args.jit, args.seed)
             for name, model in models.items()}
    print(f"\nnormalization only: every layer on one receptive field, {args.rounds} rounds of "
          f"{BREAKDOWN_REPEATS} steps")
    samples = common.measure_interleaved(steps, args.rounds, args.warmup,
                                         repeats=BREAKDOWN_REPEATS, seed=args.seed)
    for clock, by_variant in samples.items():
        print(f"\n== {clock}: normalization-only step, and its extra cost over 'none' in % of "
              "the full unnormalized step")
        print(timing.format_table(by_variant, "none", NORM_LABELS))
        full_step = timing.Summary.of(full[clock]["none"]).median
        for name in list(by_variant)[1:]:
            extra = timing.Summary.of([value - base for value, base in
                                       zip(by_variant[name], by_variant["none"])])
            print(f"{NORM_LABELS[name]}: {1000 * extra.median:+.2f} ms per step (95% CI "
                  f"{1000 * extra.ci_low:+.2f} to {1000 * extra.ci_high:+.2f}) = "
                  f"{100 * extra.median / full_step:.1f}% of the {1000 * full_step:.0f} ms step")


def print_op_profile(name: str, model: keras.Model, step: Callable[[], list],
                     steps: int) -> None:
    """Which op types the normalization's time goes to, from a profiler trace of the step."""
    wrappers = {layer.name for layer in model.layers if isinstance(layer, keras.layers.Wrapper)}
    ops = op_profile.profile_step(step, steps)
    normalization = [op for op in ops if op_profile.is_normalization_op(op, wrappers)]
    total = sum(op.self_ms_per_step for op in ops)
    spent = sum(op.self_ms_per_step for op in normalization)
    by_type = collections.Counter()
    for op in normalization:
        by_type[re.sub(r"^_Mkl(Native)?", "", op.type)] += op.self_ms_per_step
    print(f"\n{NORM_LABELS[name]}: ops' self time {total:.1f} ms/step, of which normalization "
          f"{spent:.1f} ms ({100 * spent / total:.1f}%)")
    # Shares within one variant's trace are comparable even when load inflates every op.
    print("  by op type (ms, share of the normalization): " + ", ".join(
        f"{kind} {ms:.1f} ({100 * ms / spent:.0f}%)" for kind, ms in by_type.most_common()
        if ms >= 0.05))
    print("  largest: " + "; ".join(
        f"{op.name} ({op.type}) {op.self_ms_per_step:.2f}"
        for op in sorted(normalization, key=lambda op: -op.self_ms_per_step)[:4]))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Forward+backward time of the CIFAR10 CNN discriminator with no "
                    "normalization, keras.layers.SpectralNormalization, our SN and our BSSN.")
    # ~0.25 s per step on an idle 2-core CPU: 4 variants x 60 rounds ~ 1 min (2-4x under load).
    common.add_common_arguments(parser, default_rounds=60, default_warmup=5)
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS),
                        help="which variants to time ('none' is always included: the baseline)")
    parser.add_argument("--breakdown", action="store_true",
                        help="also time the normalization alone (each layer on one receptive "
                             "field), a low-noise measure of its cost")
    parser.add_argument("--profile", type=int, default=0, metavar="STEPS",
                        help="profile STEPS steps of each normalized variant and print which "
                             "op types the normalization's time goes to (default: 0, off)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    common.check_common_arguments(parser, args)
    variants = ["none"] + [name for name in args.variants if name != "none"]

    print(common.environment_report(args.jit, args.backend_info))
    common.seed_everything(args.seed)
    images = tf.random.normal((args.batch_size, IMAGE_SIZE, IMAGE_SIZE, 3), seed=args.seed)
    models = {name: common.build_discriminator(name) for name in variants}
    steps = {name: gradient_step(model, images, args.jit) for name, model in models.items()}
    print(f"discriminator: SNGAN CNN {IMAGE_SIZE}x{IMAGE_SIZE}x3, batch {args.batch_size}; "
          f"{args.rounds} interleaved rounds after {args.warmup} warm-up steps each")
    samples = common.measure_interleaved(steps, args.rounds, args.warmup, seed=args.seed,
                                         progress=timing.print_progress(args.rounds))

    timing.print_report(samples, "none", NORM_LABELS)
    if "bssn" in variants:
        print_target(samples)
    if args.breakdown:
        print_breakdown(models, samples, args)
    if args.profile:
        print(f"\nop profile: TensorFlow profiler, {args.profile} full steps per variant "
              "(self time per op, wall clock, so loaded machines inflate it)")
        for name in variants[1:]:
            print_op_profile(name, models[name], steps[name], args.profile)
    return 0


if __name__ == "__main__":
    sys.exit(main())
