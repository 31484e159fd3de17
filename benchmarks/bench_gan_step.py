"""Training-step time of the CIFAR10 CNN GAN: normalizations, precisions, and the main job.

One step is what `fit` runs per batch: `training.gan.GAN.train_step` (one discriminator update
on a real batch and a generated one, one generator update, the logged metrics and sigmas),
compiled by Keras (`make_train_function`) and fed from a tf.data iterator. It is called
directly, so `fit`'s callbacks and progress bar are left out. Each sample times
`--steps-per-round` consecutive steps, on the wall clock and in process CPU time.

Three dimensions are timed in the same interleaved rounds: the discriminator's normalization
(none, our SN, our BSSN), the `||grad_x D||` logging (the reference logs it every step, which
costs a second backward pass through D; `track_input_gradients` switches it), and the precision
(`--precision`: each variant is built, compiled and traced under Keras's dtype policy for it;
float32 is always timed, since every other precision is stated as a ratio to it).

The main job: the step of the GAN that the README's main command builds (`training.train
--preset cifar10-cnn-bssn --semantics keras`) is timed in the same rounds, and afterwards that
command itself runs for `--main-job-steps` steps in a temporary folder, one run per precision.
Its steps/s, timed from its progress lines, against its bare step's say what `fit`, the
callbacks, the logging, the grids and the checkpoints add.

`--xla-comparison` times instead the main preset's step in both training semantics (official
and `--semantics keras`), each compiled with and without XLA, interleaved: what `jit_compile`
saves or costs on this CPU, and what each semantics costs.

Run from the repository root:

    python -m benchmarks.bench_gan_step [--rounds N] [--precision float32 bfloat16 float16]
        [--input-gradients on|off|both] [--norms none sn bssn] [--main-job-steps N] [--jit]
    python -m benchmarks.bench_gan_step --xla-comparison [--rounds N]
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import os
import pathlib
import re
import subprocess
import sys
import tempfile
import time
from typing import Sequence

if __package__ in (None, ""):  # run as a file: make `benchmarks` importable
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from benchmarks import common  # noqa: E402  (sets the backend before Keras is imported)
from benchmarks import timing  # noqa: E402
from benchmarks.common import IMAGE_SIZE, NORM_LABELS  # noqa: E402

import keras  # noqa: E402

from training.gan import GAN  # noqa: E402
from training.networks.cnn import cnn_generator  # noqa: E402
from training.presets import PRECISIONS, preset, semantics  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
LATENT_DIM = 128
NORMS = ("none", "sn", "bssn")
TRACKING = {"on": True, "off": False}  # --input-gradients value -> track_input_gradients
MAIN_JOB = "main-job"
MAIN_JOB_DATA = "../shared/data/cifar10-jpeg.tar.gz"  # the README's main command's --data-dir
PROGRESS_LINE = re.compile(r"^step (\d+)/\d+ ")  # training.callbacks.progress.ProgressLine


def variant_name(precision: str, norm: str, input_gradients: str) -> str:
    return f"{precision}/{norm}/grad-{input_gradients}"


def build_gan(norm: str, track_input_gradients: bool, jit: bool) -> GAN:
    """The GAN of the paper's CIFAR10 setting (a): Adam(1e-4, 0.5, 0.999), hinge, n_dis 1."""
    gan = GAN(cnn_generator(IMAGE_SIZE, LATENT_DIM), common.build_discriminator(norm))
    gan.compile(d_optimizer=keras.optimizers.Adam(1e-4, beta_1=0.5, beta_2=0.999),
                g_optimizer=keras.optimizers.Adam(1e-4, beta_1=0.5, beta_2=0.999),
                loss="hinge", n_dis=1, track_input_gradients=track_input_gradients,
                jit_compile=jit)
    return gan


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Train-step time of the CIFAR10 CNN GAN with no normalization, our SN "
                    "and our BSSN in the discriminator, in each precision; and the main "
                    "command's throughput against its bare step.")
    # ~0.5-2 s per step per variant on a 2-core CPU, 12 variants: 20 rounds ~ 5-15 min. One
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
    parser.add_argument("--norms", nargs="+", choices=NORMS, default=list(NORMS),
                        help="the discriminator normalizations to time; the first of them in "
                             "this order is the tables' baseline (default: none sn bssn)")
    common.add_precision_argument(parser, ("float32", "bfloat16"),
                                  "the precisions to time (float32 is always timed: the "
                                  "others are stated as ratios to it)")
    parser.add_argument("--main-job-steps", type=int, default=300, metavar="N",
                        help="time the main job's bare step in the rounds, then run the "
                             "README's main command for N steps per precision and compare "
                             "their speeds (default: 300; 0: neither)")
    parser.add_argument("--data-dir", type=pathlib.Path, default=pathlib.Path(MAIN_JOB_DATA),
                        help=f"the main command's --data-dir (default: {MAIN_JOB_DATA})")
    parser.add_argument("--xla-comparison", action="store_true",
                        help="time instead the main job's step in both semantics, without "
                             "and with XLA")
    return parser


def check_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    common.check_common_arguments(parser, args)
    if args.steps_per_round < 1:
        parser.error("--steps-per-round must be >= 1")
    if args.main_job_steps == 1 or args.main_job_steps < 0:
        parser.error("--main-job-steps must be 0 (no main job) or >= 2: its speed is timed "
                     "from the end of its first step, which compiles")
    if args.main_job_steps and not args.xla_comparison and not args.data_dir.exists():
        parser.error(f"--data-dir {args.data_dir} does not exist: give the CIFAR-10 JPEG "
                     "archive the main command trains on, or --main-job-steps 0")


SEMANTICS = ("official", "keras")
XLA_LABELS = {f"{name}/xla-{state}": f"main job, {name} semantics, XLA {state}"
              for name in SEMANTICS for state in ("off", "on")}


def build_xla_variants(args: argparse.Namespace) -> dict[str, timing.Step]:
    """The main preset's compiled train step for each semantics, without and with XLA."""
    steps = {}
    for name in SEMANTICS:
        for jit in (False, True):
            config = dataclasses.replace(preset(common.MAIN_JOB_PRESET), **semantics(name),
                                         batch_size=args.batch_size, seed=args.seed,
                                         jit_compile=jit)
            common.seed_everything(args.seed)
            dataset = common.real_images(config.batch_size * config.n_dis, args.seed)
            steps[f"{name}/xla-{'on' if jit else 'off'}"] = common.train_step(
                common.build_preset_gan(config), dataset)
    return steps


def input_gradient_settings(args: argparse.Namespace) -> list[str]:
    return ["on", "off"] if args.input_gradients == "both" else [args.input_gradients]


def precisions(args: argparse.Namespace) -> list[str]:
    """float32 first (the baseline of the precision ratios), then the others asked for."""
    return ["float32"] + [name for name in PRECISIONS
                          if name in args.precision and name != "float32"]


def norms(args: argparse.Namespace) -> list[str]:
    return [norm for norm in NORMS if norm in args.norms]


def build_variants(args: argparse.Namespace) -> dict[str, timing.Step]:
    """Every precision x ||grad_x D|| setting x norm's step, and the main job's per precision."""
    dataset = common.real_images(args.batch_size, args.seed)
    steps = {}
    for precision in precisions(args):
        for setting in input_gradient_settings(args):
            for norm in norms(args):
                # Same seed for every variant: same initial weights, so the same work per step.
                common.seed_everything(args.seed)
                with common.precision_policy(precision):
                    gan = build_gan(norm, TRACKING[setting], args.jit)
                    steps[variant_name(precision, norm, setting)] = common.train_step(gan,
                                                                                      dataset)
        if args.main_job_steps:
            steps[f"{precision}/{MAIN_JOB}"] = common.main_job_step(precision, args.batch_size,
                                                                    args.seed)[1]
    return steps


def setting_samples(samples: dict[str, timing.Samples], precision: str, setting: str,
                    names: Sequence[str]) -> dict[str, timing.Samples]:
    """The samples of one precision and ||grad_x D|| setting, keyed by norm."""
    return {clock: {norm: by_variant[variant_name(precision, norm, setting)] for norm in names}
            for clock, by_variant in samples.items()}


def print_input_gradient_cost(samples: dict[str, timing.Samples], args: argparse.Namespace
                              ) -> None:
    """How much the ||grad_x D|| logging adds to each GAN's step (same rounds, paired)."""
    print("\n== cost of the ||grad_x D|| logging: step with it vs without (paired per round)")
    for precision in precisions(args):
        for clock, by_variant in samples.items():
            for norm in norms(args):
                cost = timing.overhead_percent(by_variant,
                                               variant_name(precision, norm, "on"),
                                               variant_name(precision, norm, "off"))
                print(f"{clock:>4}: {precision} {NORM_LABELS[norm]}: {cost.median:+.1f}% "
                      f"({timing.format_ci(cost, '%')})")


def print_precision_ratios(samples: dict[str, timing.Samples], args: argparse.Namespace
                           ) -> None:
    """Each variant's time per step in each precision over the same variant's in float32."""
    print("\n== each precision against float32: time per step of the same variant, paired "
          "per round (below 1: faster)")
    variants = [(norm, setting) for setting in input_gradient_settings(args)
                for norm in norms(args)]
    variants += [(MAIN_JOB, None)] if args.main_job_steps else []
    for precision in precisions(args)[1:]:
        for clock, by_variant in samples.items():
            for norm, setting in variants:
                if setting is None:
                    name, baseline, label = (f"{precision}/{norm}", f"float32/{norm}",
                                             "main job's step")
                else:
                    name, baseline = (variant_name(precision, norm, setting),
                                      variant_name("float32", norm, setting))
                    label = f"{NORM_LABELS[norm]}, grad-{setting}"
                ratio = timing.Summary.of(timing.paired_ratios(by_variant[name],
                                                               by_variant[baseline]))
                print(f"{clock:>4}: {precision}/float32 {label}: {ratio.median:.3f}x "
                      f"(95% CI {ratio.ci_low:.3f} to {ratio.ci_high:.3f})")


@dataclasses.dataclass(frozen=True)
class JobRun:
    """What a run of the main command took, from the times its progress lines arrived.

    Attributes:
        progress: (seconds since the process started, generator step) per progress line; the
            first comes after step 1, which traces and compiles the step.
        total_seconds: from the start of the process to its exit.
    """

    progress: tuple[tuple[float, int], ...]
    total_seconds: float

    def seconds_per_step(self, start_line: int) -> tuple[float, int, int]:
        """Wall seconds per step from progress line `start_line` to the last, and the range
        of steps that covers (the steps after the line's step, to the last line's)."""
        (start_time, start_step), (end_time, end_step) = (self.progress[start_line],
                                                          self.progress[-1])
        return (end_time - start_time) / (end_step - start_step), start_step + 1, end_step


def main_job_command(precision: str, args: argparse.Namespace, folder: pathlib.Path
                     ) -> list[str]:
    """The README's main command, for `--main-job-steps` steps, writing only into `folder`."""
    return [sys.executable, "-m", "training.train", "--preset", common.MAIN_JOB_PRESET,
            "--semantics", common.MAIN_JOB_SEMANTICS, "--dataset", "folder",
            "--data-dir", str(args.data_dir.resolve()), "--steps", str(args.main_job_steps),
            "--batch-size", str(args.batch_size), "--seed", str(args.seed),
            "--precision", precision, "--out", str(folder / "run"),
            "--saved-models", str(folder / "saved_models"), "--no-export"]


def run_main_job(command: Sequence[str]) -> JobRun:
    """Runs the command and times its progress lines as they arrive.

    Raises:
        RuntimeError: the command failed, or printed fewer than two progress lines.
    """
    # Unbuffered, so that each line arrives when it is printed (the progress lines flush).
    environment = dict(os.environ, PYTHONUNBUFFERED="1")
    output_tail = collections.deque(maxlen=30)
    progress = []
    start = time.perf_counter()
    with subprocess.Popen(command, cwd=REPO, env=environment, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT) as process:
        for line in process.stdout:
            arrived = time.perf_counter() - start
            output_tail.append(line)
            match = PROGRESS_LINE.match(line)
            if match:
                progress.append((arrived, int(match.group(1))))
    total = time.perf_counter() - start
    if process.returncode or len(progress) < 2:
        raise RuntimeError(f"The main job `{' '.join(command)}` exited with "
                           f"{process.returncode} after {len(progress)} progress lines; the "
                           f"end of its output:\n{''.join(output_tail)}")
    return JobRun(tuple(progress), total)


def print_main_job(samples: dict[str, timing.Samples], args: argparse.Namespace) -> None:
    """Runs the main command per precision; its wall time per step against its bare step's."""
    print(f"\n== the main job: the README's main command (`python -m training.train --preset "
          f"{common.MAIN_JOB_PRESET} --semantics {common.MAIN_JOB_SEMANTICS} --dataset folder "
          f"--data-dir {args.data_dir}`) for {args.main_job_steps} steps in a temporary folder "
          "(--no-export), its time per step from its progress lines (wall), against its bare "
          "step (the mean of the rounds' wall samples, in the rounds above)")
    for precision in precisions(args):
        with tempfile.TemporaryDirectory(prefix="bench_main_job_") as folder:
            command = main_job_command(precision, args, pathlib.Path(folder))
            print(f"running: {' '.join(command)}", flush=True)
            job = run_main_job(command)
        bare = sum(samples["wall"][f"{precision}/{MAIN_JOB}"]) / args.rounds
        windows = [job.seconds_per_step(0)]
        if len(job.progress) > 2:
            # From the first log row on: the first row's and grid's functions compile once.
            windows.append(job.seconds_per_step(1))
        print(f"main job {precision}: " + "; ".join(
            f"{1 / seconds:.2f} steps/s ({1000 * seconds:.1f} ms/step) over steps {first}-{last}"
            for seconds, first, last in windows))
        print(f"main job {precision}: step 1 done {job.progress[0][0]:.1f} s after the process "
              f"started (start-up and compilation); exited after {job.total_seconds:.1f} s")
        print(f"bare step {precision}: {1 / bare:.2f} steps/s ({1000 * bare:.1f} ms/step)")
        print(f"main job / bare step {precision}: " + "; ".join(
            f"{seconds / bare:.3f} over steps {first}-{last}"
            for seconds, first, last in windows))


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    check_arguments(parser, args)

    if args.xla_comparison:
        print(common.environment_report(False, args.backend_info))
        samples = common.measure_interleaved(build_xla_variants(args), args.rounds,
                                             args.warmup, repeats=args.steps_per_round,
                                             seed=args.seed,
                                             progress=timing.print_progress(args.rounds))
        timing.print_report(samples, "official/xla-off", XLA_LABELS, throughput=True)
        return 0
    print(common.environment_report(args.jit, args.backend_info))
    steps = build_variants(args)
    print(f"GAN: CNN G + D {IMAGE_SIZE}x{IMAGE_SIZE}, batch {args.batch_size}, hinge, n_dis 1; "
          f"precisions {', '.join(precisions(args))}; {args.rounds} interleaved rounds of "
          f"{args.steps_per_round} step(s) per variant after {args.warmup} warm-up steps each")
    samples = common.measure_interleaved(steps, args.rounds, args.warmup,
                                         repeats=args.steps_per_round, seed=args.seed,
                                         progress=timing.print_progress(args.rounds))

    settings = input_gradient_settings(args)
    for precision in precisions(args):
        for setting in settings:
            print(f"\n#### {precision} ({PRECISIONS[precision]}), ||grad_x D|| logging "
                  f"{setting} (track_input_gradients={TRACKING[setting]})")
            timing.print_report(setting_samples(samples, precision, setting, norms(args)),
                                norms(args)[0], NORM_LABELS, throughput=True)
    if args.main_job_steps:
        print("\n#### the main job's step (the GAN of the README's main command)")
        timing.print_report({clock: {precision: by_variant[f"{precision}/{MAIN_JOB}"]
                                     for precision in precisions(args)}
                             for clock, by_variant in samples.items()},
                            "float32", throughput=True)
    if len(settings) == 2:
        print_input_gradient_cost(samples, args)
    if len(precisions(args)) > 1:
        print_precision_ratios(samples, args)
    if args.main_job_steps:
        print_main_job(samples, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
