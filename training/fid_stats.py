r"""Write the real-image statistics FID compares with, as a TTUR-format `.npz`.

Usage:

```
python -m training.fid_stats --dataset cifar10 --data-dir PATH --split train --num 50000 \
    --extractor inception-2015 --out stats.npz [--save-features]
```

The file holds `mu` and `sigma` (TTUR's keys, so it is interchangeable with TTUR's published
`fid_stats_*.npz`); with `--save-features` also the features themselves, which KID needs.
Images come from `training.data.load_images`; the first `--num` are used.
"""

from __future__ import annotations

import argparse
import sys

from training import cli


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    return cli.run(_fid_stats, _parser(), argv)


def _fid_stats(args: argparse.Namespace) -> int:
    cli.check_output_file(args.out, "--out", ".npz")
    cli.start_tensorflow()  # quietly, before the modules below load it
    from training.data import load_images
    from training.evaluation import compute_real_statistics
    from training.inception import make_extractor

    # The data is checked before the (downloaded) extractor loads.
    images = load_images(args.dataset, data_dir=args.data_dir, split=args.split,
                         image_size=args.image_size, crop_size=args.crop_size)
    extractor = make_extractor(args.extractor, batch_size=args.batch_size)
    statistics = compute_real_statistics(extractor, images, args.num,
                                         keep_features=args.save_features)
    statistics.save(args.out)
    stored = "mu, sigma and features" if args.save_features else "mu and sigma"
    print(
        f"Wrote {args.out}: {stored} of {args.num} {args.dataset} {args.split} images, "
        f"{statistics.mu.shape[0]}-d {extractor.name} features."
    )
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = cli.parser("training.fid_stats", __doc__)
    cli.add_real_data_arguments(parser)
    parser.add_argument("--num", type=cli.sample_count, default=50_000,
                        help="real images to use")
    cli.add_extractor_arguments(parser)
    parser.add_argument("--out", required=True, help="the .npz file to write")
    parser.add_argument(
        "--save-features",
        action="store_true",
        help="also store the features (float32), so that KID can be computed from the file",
    )
    return parser


if __name__ == "__main__":
    sys.exit(main())
