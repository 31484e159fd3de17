"""A plain PyTorch SNGAN-CNN GAN step, written as ours is, for a side-by-side time.

PyTorch is not a dependency of this project: this script runs only where `torch` is installed
(`pip install torch`), and imports nothing of TensorFlow or Keras.

The networks are those of `training/networks/cnn.py` at 32x32x3: G is z (128) -> Linear(4*4*512)
-> BatchNorm -> ReLU -> 3x [ConvTranspose 4x4/2 + BatchNorm + ReLU] (256, 128, 64) ->
ConvTranspose 3x3/1 to 3 -> tanh; D is seven convolutions (3x3/1 64, 4x4/2 64, 3x3/1 128, 4x4/2
128, 3x3/1 256, 4x4/2 256, 3x3/1 512), each followed by LeakyReLU(0.1), then Linear(1), every
one of them under `torch.nn.utils.spectral_norm` (one power iteration per training forward).

One step is one D update then one G update, as `GAN.train_step` runs them with n_dis 1 and the
`||grad_x D||` logging off (`bench_gan_step --input-gradients off`): hinge loss, Adam(1e-4,
0.5, 0.999) for each network, batch 64 of a fixed synthetic real batch. The D update runs G
(BatchNorm in training mode, no gradient) on fresh latents and D once on the real and fake
images concatenated, so the power iteration advances once. The G update runs G in training
mode on fresh latents and D in eval mode (no power-iteration step, as `--semantics keras`
does), and computes no gradients for D's weights. `--bf16` adds the same step under
`torch.autocast("cpu", torch.bfloat16)` (losses in float32), timed in the same interleaved
rounds. Torch uses as many threads as the machine has cores.

Run from the repository root:

    python -m benchmarks.bench_torch_sngan [--rounds 20] [--bf16]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import pathlib
import platform
import sys
from typing import Sequence

if __package__ in (None, ""):  # run as a file: make `benchmarks` importable
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from benchmarks import timing  # noqa: E402

try:
    import torch  # noqa: E402
    from torch import nn  # noqa: E402
except ImportError:  # not a dependency: say how to get it, without a traceback
    print("error: this benchmark needs PyTorch, which this project does not install. Run "
          "`pip install torch` first.", file=sys.stderr)
    sys.exit(2)

IMAGE_SIZE = 32
LATENT_DIM = 128
CHANNELS = 3
DISCRIMINATOR_CONVS = [(3, 1, 64), (4, 2, 64), (3, 1, 128), (4, 2, 128), (3, 1, 256),
                       (4, 2, 256), (3, 1, 512)]  # (kernel, stride, filters), as cnn.py
LABELS = {"float32": "PyTorch SNGAN-CNN, float32",
          "bfloat16": "PyTorch SNGAN-CNN, autocast bfloat16"}


def generator() -> nn.Module:
    base = IMAGE_SIZE // 8
    layers = [nn.Linear(LATENT_DIM, base * base * 512), nn.BatchNorm1d(base * base * 512),
              nn.ReLU(), nn.Unflatten(1, (512, base, base))]
    channels = 512
    for filters in (256, 128, 64):
        # Kernel 4, stride 2, padding 1: exactly doubles the side, as Keras's "same" does.
        layers += [nn.ConvTranspose2d(channels, filters, 4, stride=2, padding=1),
                   nn.BatchNorm2d(filters), nn.ReLU()]
        channels = filters
    layers += [nn.ConvTranspose2d(channels, CHANNELS, 3, stride=1, padding=1), nn.Tanh()]
    return nn.Sequential(*layers)


def discriminator() -> nn.Module:
    spectral_norm = nn.utils.spectral_norm  # n_power_iterations=1 by default
    layers, channels, side = [], CHANNELS, IMAGE_SIZE
    for kernel, stride, filters in DISCRIMINATOR_CONVS:
        # Padding 1 is Keras's "same" for these kernels: 3x3/1 keeps the side, 4x4/2 halves it.
        layers += [spectral_norm(nn.Conv2d(channels, filters, kernel, stride=stride,
                                           padding=1)), nn.LeakyReLU(0.1)]
        channels, side = filters, side // stride
    layers += [nn.Flatten(), spectral_norm(nn.Linear(channels * side * side, 1))]
    return nn.Sequential(*layers)


def gan_step(bf16: bool, batch_size: int, seed: int) -> timing.Step:
    """A call running one D update then one G update of a fresh SNGAN-CNN."""
    torch.manual_seed(seed)
    g, d = generator(), discriminator()
    g_optimizer = torch.optim.Adam(g.parameters(), lr=1e-4, betas=(0.5, 0.999))
    d_optimizer = torch.optim.Adam(d.parameters(), lr=1e-4, betas=(0.5, 0.999))
    real = torch.rand(batch_size, CHANNELS, IMAGE_SIZE, IMAGE_SIZE) * 2 - 1
    g.train()

    def autocast() -> contextlib.AbstractContextManager:
        return (torch.autocast("cpu", dtype=torch.bfloat16) if bf16
                else contextlib.nullcontext())

    def step() -> None:
        d.train()  # spectral_norm advances u in training forwards
        d.requires_grad_(True)
        with torch.no_grad(), autocast():
            fake = g(torch.randn(batch_size, LATENT_DIM))
        with autocast():
            logits = d(torch.cat([real, fake.to(real.dtype)])).float()
        logits_real, logits_fake = logits.split(batch_size)
        d_loss = (torch.relu(1 - logits_real).mean() + torch.relu(1 + logits_fake).mean())
        d_optimizer.zero_grad(set_to_none=True)
        d_loss.backward()
        d_optimizer.step()

        d.eval()  # the G update normalizes with the stored u, without a power-iteration step
        d.requires_grad_(False)  # only G's gradients are needed
        with autocast():
            g_loss = -d(g(torch.randn(batch_size, LATENT_DIM))).float().mean()
        g_optimizer.zero_grad(set_to_none=True)
        g_loss.backward()
        g_optimizer.step()

    return step


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Train-step time of a plain PyTorch SNGAN-CNN (D update + G update, "
                    "hinge, batch 64), for comparison with `bench_gan_step`.")
    parser.add_argument("--rounds", type=int, default=20,
                        help="interleaved rounds; each round times every variant once "
                             "(default: 20)")
    parser.add_argument("--warmup", type=int, default=3,
                        help="untimed steps per variant before timing (default: 3)")
    parser.add_argument("--batch-size", type=int, default=64,
                        help="discriminator batch (default: 64, the paper's CIFAR10 batch)")
    parser.add_argument("--bf16", action="store_true",
                        help="also time the step under torch.autocast('cpu', bfloat16)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seeds weights, inputs and the per-round variant order")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    timing.check_at_least_one(parser, args, ("rounds", "warmup", "batch_size"))
    torch.set_num_threads(os.cpu_count() or 1)
    print(f"PyTorch {torch.__version__}, Python {platform.python_version()}; "
          f"{torch.get_num_threads()} threads, {os.cpu_count()} CPU cores visible")
    variants = {"float32": gan_step(False, args.batch_size, args.seed)}
    if args.bf16:
        variants["bfloat16"] = gan_step(True, args.batch_size, args.seed)
    print(f"GAN: SNGAN CNN G + D {IMAGE_SIZE}x{IMAGE_SIZE}, batch {args.batch_size}, hinge, "
          f"n_dis 1; {args.rounds} interleaved rounds of 1 step per variant after "
          f"{args.warmup} warm-up steps each")
    samples = timing.measure_interleaved(variants, args.rounds, args.warmup, seed=args.seed,
                                         progress=timing.print_progress(args.rounds))
    timing.print_report(samples, "float32", LABELS, throughput=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
