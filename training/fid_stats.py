"""Write the real-image statistics FID compares with, as a TTUR-format `.npz`.

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

import tensorflow as tf

from training.callbacks.fid import compute_real_statistics
from training.inception import DEFAULT_BATCH_SIZE, INCEPTION_2015_NAME, make_extractor


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = _parser().parse_args(argv)
    extractor = make_extractor(args.extractor, batch_size=args.batch_size)
    statistics = compute_real_statistics(
        extractor, real_dataset(args), args.num, keep_features=args.save_features
    )
    statistics.save(args.out)
    stored = "mu, sigma and features" if args.save_features else "mu and sigma"
    print(
        f"Wrote {args.out}: {stored} of {args.num} {args.dataset} {args.split} images, "
        f"{statistics.mu.shape[0]}-d {extractor.name} features."
    )
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m training.fid_stats",
        description="Compute the real-image statistics (mean, covariance) FID compares with.",
    )
    add_real_data_arguments(parser)
    parser.add_argument(
        "--num", type=positive_int, default=50_000, help="real images to use (default 50000)"
    )
    add_extractor_arguments(parser)
    parser.add_argument("--out", required=True, help="the .npz file to write")
    parser.add_argument(
        "--save-features",
        action="store_true",
        help="also store the features (float32), so that KID can be computed from the file",
    )
    return parser


def add_real_data_arguments(
    parser: argparse.ArgumentParser, dataset_group: argparse._ActionsContainer | None = None
) -> None:
    """`--dataset`, `--data-dir`, `--split`, `--image-size`, `--crop-size`: which real images.

    `--dataset` is required, unless it goes into `dataset_group` (e.g. a required mutually
    exclusive group offering another source of real statistics).
    """
    (dataset_group or parser).add_argument(
        "--dataset",
        required=dataset_group is None,
        help="data set name for training.data, e.g. cifar10",
    )
    parser.add_argument("--data-dir", help="where the data set's files are")
    parser.add_argument("--split", default="train", help="data set split (default train)")
    parser.add_argument(
        "--image-size", type=positive_int, help="resize real images to this size first"
    )
    parser.add_argument(
        "--crop-size", type=positive_int,
        help="centre-crop real images to this square before resizing (default: largest)"
    )


def add_extractor_arguments(parser: argparse.ArgumentParser) -> None:
    """`--extractor` and `--batch-size`."""
    parser.add_argument(
        "--extractor",
        default=INCEPTION_2015_NAME,
        help="inception-2015 (default; comparable with papers), keras-inceptionv3, "
        "a .keras feature model, or a .pb/.tgz copy of the Inception graph",
    )
    parser.add_argument(
        "--batch-size",
        type=positive_int,
        default=DEFAULT_BATCH_SIZE,
        help=f"images per forward pass (default {DEFAULT_BATCH_SIZE})",
    )


def real_dataset(args: argparse.Namespace) -> tf.data.Dataset:
    """The real images named by `add_real_data_arguments`' options."""
    from training.data import load_images  # imported here: the data stack is heavy

    return load_images(args.dataset, data_dir=args.data_dir, split=args.split,
                       image_size=args.image_size, crop_size=args.crop_size)


def positive_int(text: str) -> int:
    """An argparse type: an integer >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


if __name__ == "__main__":
    sys.exit(main())
