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
from collections.abc import Callable

import keras
import tensorflow as tf

from training.callbacks.fid import (
    IS_SPLITS,
    KID_SUBSET_SIZE,
    KID_SUBSETS,
    NUM_FID_SAMPLES,
    NUM_REAL_SAMPLES,
    RealStatistics,
    cached_real_statistics,
    evaluate_generator,
    real_statistics_cache_path,
)
from training.export import SERVING_SIGNATURE, ExportError, load_export
from training.fid_stats import (
    add_extractor_arguments,
    add_real_data_arguments,
    positive_int,
    real_dataset,
)
from training.inception import make_extractor


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 on success, 2 on a bad generator)."""
    args = _parser().parse_args(argv)
    try:
        generate, latent_dim = load_generator(args.generator)
    except ExportError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    extractor = make_extractor(args.extractor, batch_size=args.batch_size)
    if args.stats:
        real = RealStatistics.load(args.stats)
    else:
        from training.data import source_key  # imported here: the data stack is heavy

        cache_path = real_statistics_cache_path(
            args.cache_dir,
            source_key(args.dataset, args.data_dir, args.image_size, args.crop_size),
            args.split, extractor.name, args.num_real)
        real = cached_real_statistics(
            extractor, lambda: real_dataset(args), args.num_real, cache_path
        )
    scores = evaluate_generator(
        generate,
        latent_dim,
        extractor,
        real,
        num_samples=args.num,
        num_is_samples=args.num_is,
        is_splits=args.splits,
        kid_subsets=args.kid_subsets,
        kid_subset_size=args.kid_subset_size,
        seed=args.seed,
    )
    if args.json:
        print(json.dumps(scores, indent=2))
    else:
        print(f"{args.generator}: {args.num} samples, extractor {extractor.name}")
        print(format_table(scores))
    return 0


def load_generator(path: str) -> tuple[Callable[[tf.Tensor], tf.Tensor], int]:
    """`(generate, latent_dim)` for an export folder or a `.keras` generator file.

    Raises:
        ExportError: `path` is neither a `.keras` file nor a valid generator export.
    """
    if path.endswith(".keras"):
        model = keras.saving.load_model(path, compile=False)
        return (lambda latents: model(latents, training=False)), int(model.input_shape[-1])
    export = load_export(path)

    def generate(latents: tf.Tensor) -> tf.Tensor:
        # Reached through `export`, which keeps alive the loaded variables the signature reads.
        return export.saved_model.signatures[SERVING_SIGNATURE](latents=latents)["images"]

    return generate, export.latent_dim


def format_table(scores: dict[str, float]) -> str:
    """A two-column text table of the scores."""
    rows = [("metric", "value")] + [(name, f"{value:.6g}") for name, value in scores.items()]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m training.evaluate",
        description="FID, Inception Score and KID of a generator.",
    )
    parser.add_argument("generator", help="an export folder (training.export) or a .keras file")
    real = parser.add_mutually_exclusive_group(required=True)
    real.add_argument("--stats", help="real statistics .npz (training.fid_stats or TTUR's)")
    add_real_data_arguments(parser, dataset_group=real)
    parser.add_argument(
        "--num-real",
        type=positive_int,
        default=NUM_REAL_SAMPLES,
        help=f"with --dataset: the first N real images (default {NUM_REAL_SAMPLES})",
    )
    parser.add_argument(
        "--cache-dir", help="with --dataset: statistics cache folder (default ~/.keras/...)"
    )
    parser.add_argument(
        "--num",
        type=positive_int,
        default=NUM_FID_SAMPLES,
        help=f"generated images for FID and KID (default {NUM_FID_SAMPLES})",
    )
    parser.add_argument(
        "--num-is", type=positive_int, help="generated images for IS (default: --num)"
    )
    parser.add_argument(
        "--splits", type=positive_int, default=IS_SPLITS, help=f"IS splits (default {IS_SPLITS})"
    )
    parser.add_argument(
        "--kid-subsets",
        type=positive_int,
        default=KID_SUBSETS,
        help=f"KID subsets (default {KID_SUBSETS})",
    )
    parser.add_argument(
        "--kid-subset-size",
        type=positive_int,
        default=KID_SUBSET_SIZE,
        help=f"images per KID subset (default {KID_SUBSET_SIZE})",
    )
    add_extractor_arguments(parser)
    parser.add_argument("--seed", type=int, default=0, help="latent seed (default 0)")
    parser.add_argument("--json", action="store_true", help="print the scores as JSON")
    return parser


if __name__ == "__main__":
    sys.exit(main())
