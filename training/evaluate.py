"""FID, Inception Score and KID of a trained generator.

Usage:

```
python -m training.evaluate saved_models/cifar10_bssn --stats stats.npz --num 10000
python -m training.evaluate generator.keras --dataset cifar10 --data-dir PATH --json
```

The generator is an export folder written by `training.export` (its `serving_default`
signature maps `latents` to `images` in [-1, 1]; the latent size is in its metadata) or a
`.keras` generator model. Real statistics come from a `.npz` file (`training.fid_stats`,
or TTUR's published ones) or are computed from a data set and cached. KID needs the real
features: it is reported with `--dataset`, or with a statistics file written with
`--save-features`.
"""

from __future__ import annotations

import argparse
import json
import sys

from training import cli, protocol
from training.errors import UsageError


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 on success, 2 on a user's mistake)."""
    return cli.run(_evaluate, _parser(), argv)


def _evaluate(args: argparse.Namespace) -> int:
    if (args.num_is or args.num) < args.splits:
        raise UsageError(f"--splits {args.splits} splits {args.num_is or args.num} images for "
                         "the Inception Score: give at least as many --num-is (or --num) "
                         "images as --splits.")
    cli.start_tensorflow()  # quietly, before the modules below load it
    from training.evaluation import (RealStatistics,
                                     cached_real_statistics, evaluate_generator,
                                     load_generator, real_statistics_cache_path)
    from training.inception import make_extractor

    # Cheap checks first: the generator and the real data, then the (downloaded) extractor.
    generate, latent_dim = load_generator(args.generator)
    if args.stats:
        real = RealStatistics.load(args.stats)
    else:
        from training.data import load_images, source_key  # the TFDS stack, when needed

        images = load_images(args.dataset, data_dir=args.data_dir, split=args.split,
                             image_size=args.image_size, crop_size=args.crop_size)
    extractor = make_extractor(args.extractor, batch_size=args.batch_size)
    if args.stats:
        real.check_extractor(extractor, f"--stats {args.stats}")
    if not args.stats:
        cache_path = real_statistics_cache_path(
            args.cache_dir,
            source_key(args.dataset, args.data_dir, args.image_size, args.crop_size),
            args.split, extractor.name, args.num_real)
        real = cached_real_statistics(extractor, images, args.num_real, cache_path)
    scores = evaluate_generator(
        generate, latent_dim, extractor, real, num_samples=args.num, num_is_samples=args.num_is,
        is_splits=args.splits, kid_subsets=args.kid_subsets,
        kid_subset_size=args.kid_subset_size, seed=args.seed)
    if args.json:
        print(json.dumps(scores, indent=2))
    else:
        print(f"{args.generator}: {args.num} samples, extractor {extractor.name}")
        print(format_table(scores))
    return 0


def format_table(scores: dict[str, float]) -> str:
    """A two-column text table of the scores."""
    rows = [("metric", "value")] + [(name, f"{value:.6g}") for name, value in scores.items()]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def _parser() -> argparse.ArgumentParser:
    parser = cli.parser("training.evaluate", __doc__)
    parser.add_argument("generator", help="an export folder (training.export) or a .keras file")
    real = parser.add_mutually_exclusive_group(required=True)
    real.add_argument("--stats", help="real statistics .npz (training.fid_stats or TTUR's)")
    cli.add_real_data_arguments(parser, dataset_group=real)
    parser.add_argument("--num-real", type=cli.sample_count, default=protocol.NUM_REAL_SAMPLES,
                        help="with --dataset: the first N real images")
    parser.add_argument("--cache-dir", help="with --dataset: statistics cache folder "
                        "(default: ~/.keras/keras_bssn/fid_stats)")
    parser.add_argument("--num", type=cli.sample_count, default=protocol.NUM_FID_SAMPLES,
                        help="generated images for FID and KID")
    parser.add_argument("--num-is", type=cli.positive_int,
                        help="generated images for IS (default: --num)")
    parser.add_argument("--splits", type=cli.positive_int, default=protocol.IS_SPLITS,
                        help="IS splits")
    parser.add_argument("--kid-subsets", type=cli.positive_int, default=protocol.KID_SUBSETS,
                        help="KID subsets")
    parser.add_argument("--kid-subset-size", type=cli.sample_count,
                        default=protocol.KID_SUBSET_SIZE, help="images per KID subset")
    cli.add_extractor_arguments(parser)
    parser.add_argument("--seed", type=cli.random_seed, default=0, help="latent seed")
    parser.add_argument("--json", action="store_true", help="print the scores as JSON")
    return parser


if __name__ == "__main__":
    sys.exit(main())
