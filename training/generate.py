"""Sample images from an exported generator: a PNG grid and, optionally, an `.npz` for FID.

Usage:

```
python -m training.generate saved_models/cifar10_bssn --num 64 --seed 0 --out grid.png
python -m training.generate saved_models/cifar10_bssn --num 50000 --seed 0 --npz samples.npz
```

Images come from the export's `generate` signature, so the same export and seed give the same
files, in any process.
"""

from __future__ import annotations

import argparse
import sys

from training import cli
from training.errors import OutputPathError
from training.images import grid_layout, save_grid_png, save_images_npz

# All images are generated in one array: 1M 32x32 RGB images are 3 GB.
MAX_IMAGES = 1_000_000


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 on success, 2 on a user's mistake)."""
    return cli.run(_generate, _parser(), argv)


def _generate(args: argparse.Namespace) -> int:
    if not (args.out or args.npz):  # a 50k-sample FID run wants the .npz, not a giant grid
        raise OutputPathError("nothing to write: give --out grid.png and/or --npz "
                                  "samples.npz.")
    if args.out:
        cli.check_output_file(args.out, "--out", ".png")
    if args.npz:
        cli.check_output_file(args.npz, "--npz", ".npz")
    cli.start_tensorflow()
    from training.export import describe_export, load_export

    print(describe_export(args.export))
    images = load_export(args.export).generate(args.num, args.seed)
    if args.out:
        save_grid_png(images, args.out, args.nrow)
        rows, cols = grid_layout(len(images), args.nrow)
        print(f"Wrote {args.out}: {rows}x{cols} grid of {args.num} images (seed {args.seed}).")
    if args.npz:
        save_images_npz(images, args.npz)
        print(f"Wrote {args.npz}: uint8 images {images.shape} under key 'images'.")
    return 0


def _image_count(text: str) -> int:
    count = cli.positive_int(text)
    if count > MAX_IMAGES:
        raise argparse.ArgumentTypeError(
            f"at most {MAX_IMAGES:,} images per call (they are held in memory), got {text}; "
            "run several calls with different --seed values")
    return count


def _parser() -> argparse.ArgumentParser:
    parser = cli.parser("training.generate", __doc__)
    parser.add_argument("export", help="the export folder, e.g. saved_models/<name>")
    parser.add_argument("--num", type=_image_count, default=64, help="images")
    parser.add_argument("--seed", type=cli.random_seed, default=0, help="sampling seed")
    parser.add_argument("--out", help="PNG grid to write, e.g. grid.png")
    parser.add_argument("--npz", help="also write the uint8 images to this .npz (key 'images')")
    parser.add_argument("--nrow", type=cli.positive_int,
                        help="images per grid row (default: a near-square grid)")
    return parser


if __name__ == "__main__":
    sys.exit(main())
