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

from training.export import ExportError, describe_export, load_export
from training.fid_stats import positive_int
from training.images import grid_layout, save_grid_png, save_images_npz


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 on success, 2 on a bad export)."""
    parser = _parser()
    args = parser.parse_args(argv)
    if not (args.out or args.npz):  # a 50k-sample FID run wants the .npz, not a giant grid
        parser.error("nothing to write: give --out and/or --npz")
    try:
        print(describe_export(args.export))
        generator = load_export(args.export)
    except ExportError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    images = generator.generate(args.num, args.seed)
    if args.out:
        save_grid_png(images, args.out, args.nrow)
        rows, cols = grid_layout(len(images), args.nrow)
        print(f"Wrote {args.out}: {rows}x{cols} grid of {args.num} images (seed {args.seed}).")
    if args.npz:
        save_images_npz(images, args.npz)
        print(f"Wrote {args.npz}: uint8 images {images.shape} under key 'images'.")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m training.generate",
        description="Sample images from a generator exported by training.export.",
    )
    parser.add_argument("export", help="the export folder, e.g. saved_models/<name>")
    parser.add_argument("--num", type=positive_int, default=64, help="images (default 64)")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    parser.add_argument("--out", help="PNG grid to write, e.g. grid.png")
    parser.add_argument("--npz", help="also write the uint8 images to this .npz (key 'images')")
    parser.add_argument(
        "--nrow", type=positive_int, help="images per grid row (default: a near-square grid)"
    )
    return parser


if __name__ == "__main__":
    sys.exit(main())
