"""FID costs: feature extraction throughput, and one 2048-d Frechet distance two ways.

1. Extraction: images per second through a `training.inception` extractor, 32x32 images in
   [-1, 1] resized to the network's 299x299. By default the extractor is a stand-in,
   `KerasInceptionV3(weights=None)`: the 2015-12-05 Inception graph cannot be downloaded
   here, and InceptionV3 is the same family at the same input size (~5.7 GFLOPs per image),
   so its speed is indicative; pass `--graph` to time the real graph.
2. The Frechet distance between two 2048-d Gaussians (the size of pool_3 features):
   `training.metrics.frechet_distance` (eigenvalues of a symmetric product) against TTUR's
   formula (`scipy.linalg.sqrtm` of the non-symmetric product), interleaved rounds, the
   paired ratio per round, and the two results' relative difference.

Run from the repository root:

    python -m benchmarks.bench_fid [--images 128] [--batch-size 32] [--graph PATH]
"""

from __future__ import annotations

import argparse
import pathlib
import sys
from typing import Sequence

if __package__ in (None, ""):  # run as a file: make `benchmarks` importable
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from benchmarks import common  # noqa: E402  (sets the backend before Keras is imported)
from benchmarks import timing  # noqa: E402

import numpy as np  # noqa: E402
import scipy.linalg  # noqa: E402

from training.inception import FeatureExtractor, KerasInceptionV3, TTURInception  # noqa: E402
from training.metrics import frechet_distance  # noqa: E402

FEATURE_DIM = 2048
IMAGE_SIZE = 32
LABELS = {"eigen": "ours (Cholesky + eigvalsh)", "sqrtm": "TTUR (scipy sqrtm)"}


def ttur_frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """TTUR's `calculate_frechet_distance`."""
    covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)
    return float(np.square(mu1 - mu2).sum() + np.trace(sigma1 + sigma2 - 2 * covmean.real))


def gaussians(dim: int, seed: int) -> tuple[np.ndarray, ...]:
    """Two Gaussians fitted to 2 * dim correlated samples each, as real features give."""
    rng = np.random.default_rng(seed)
    # Well conditioned: ||G / sqrt(d)|| ~ 2, so the singular values stay above ~0.5.
    mixing = np.eye(dim) + rng.standard_normal((dim, dim)) / (4 * np.sqrt(dim))
    real = rng.standard_normal((2 * dim, dim)) @ mixing
    fake = 1.1 * rng.standard_normal((2 * dim, dim)) @ mixing + 0.1
    return (real.mean(0), np.cov(real, rowvar=False), fake.mean(0), np.cov(fake, rowvar=False))


def benchmark_extraction(extractor: FeatureExtractor, args: argparse.Namespace) -> None:
    images = np.random.default_rng(args.seed).uniform(
        -1.0, 1.0, (args.images, IMAGE_SIZE, IMAGE_SIZE, 3)
    ).astype(np.float32)
    samples = common.measure_interleaved(
        {"extract": lambda: extractor(images)}, args.extract_rounds, warmup=1, seed=args.seed
    )
    for clock, by_variant in samples.items():
        seconds = timing.Summary.of(by_variant["extract"])
        print(f"  {clock:>4}: {args.images / seconds.median:8.1f} images/s "
              f"({1000 * seconds.median / args.images:.1f} ms/image; per-round "
              f"{args.images / seconds.q3:.1f}-{args.images / seconds.q1:.1f} images/s)")


def benchmark_frechet(args: argparse.Namespace) -> None:
    statistics = gaussians(args.dim, args.seed)
    ours, ttur = frechet_distance(*statistics), ttur_frechet_distance(*statistics)
    print(f"  FID {ours:.6f} (ours) vs {ttur:.6f} (TTUR): relative difference "
          f"{abs(ours - ttur) / abs(ttur):.1e}")
    samples = common.measure_interleaved(
        {"eigen": lambda: frechet_distance(*statistics),
         "sqrtm": lambda: ttur_frechet_distance(*statistics)},
        args.fid_rounds, warmup=0, seed=args.seed,
        progress=timing.print_progress(args.fid_rounds),
    )
    for clock, by_variant in samples.items():
        print(f"\n  {clock} clock:")
        print(timing.format_table(by_variant, "sqrtm", LABELS))
        ratio = timing.Summary.of(timing.paired_ratios(by_variant["sqrtm"], by_variant["eigen"]))
        print(f"  ours is {ratio.median:.1f}x faster (per-round {ratio.q1:.1f}x-{ratio.q3:.1f}x)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=128, help="images per timed call")
    parser.add_argument("--batch-size", type=int, default=32, help="extractor batch size")
    parser.add_argument("--graph", help="time TTURInception on this .pb/.tgz instead")
    parser.add_argument("--extract-rounds", type=int, default=3, help="extraction rounds")
    parser.add_argument("--fid-rounds", type=int, default=3, help="Frechet distance rounds")
    parser.add_argument("--dim", type=int, default=FEATURE_DIM, help="feature dimension")
    parser.add_argument("--skip-extraction", action="store_true", help="time FID only")
    parser.add_argument("--backend-info", action="store_true", help="print backend details")
    parser.add_argument("--seed", type=int, default=0, help="seeds images and features")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    print(common.environment_report(jit=False, backend_info=args.backend_info))
    if not args.skip_extraction:
        if args.graph:
            extractor, what = TTURInception(args.graph, batch_size=args.batch_size), args.graph
        else:
            extractor = KerasInceptionV3(weights=None, batch_size=args.batch_size)
            what = "STAND-IN keras.applications.InceptionV3(weights=None), not the 2015 graph"
        print(f"\nFeature extraction: {what}; {args.images} images {IMAGE_SIZE}x{IMAGE_SIZE} "
              f"resized to 299x299, batch {args.batch_size}, median of {args.extract_rounds}:")
        benchmark_extraction(extractor, args)
    print(f"\nFrechet distance, {args.dim}-d, median of {args.fid_rounds} interleaved rounds:")
    benchmark_frechet(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
