r"""Train a small classifier whose features measure sample quality (`training.classifier`).

Usage:

```
python -m training.feature_classifier --data-dir ../shared/data/cifar10-jpeg.tar.gz \
    --out runs/classifier/cifar10-classifier.keras
```

Trains a compact CNN on the labelled images of `--data-dir` (`train/<class>/<image>`,
tested on `test/<class>/<image>`; a folder or a `.tar.gz` of one) and writes it as a `.keras`
model with the outputs `[features, logits]`, and its train and test accuracy beside it
(`.json`). Give the model as `--extractor` to `training.fid_stats`, `training.evaluate` or
`training.analyze feature-distance`: the Fréchet distance in its features ranks generators
of that data, comparably only with other distances in the same model's features. The same
seed trains the same model.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from training import cli


def main(argv: list[str] | None = None) -> int:
    """Runs `python -m training.feature_classifier` on `argv`; returns the exit code."""
    return cli.run(_feature_classifier, _parser(), argv)


def _feature_classifier(args: argparse.Namespace) -> int:
    cli.check_output_file(args.out, "--out", ".keras")
    cli.start_tensorflow()  # quietly, before the modules below load it
    from training.classifier import save_classifier, train_classifier
    from training.data.labelled import check_labelled_folder, load_labelled_images

    data_dir = Path(args.data_dir).expanduser()
    check_labelled_folder(data_dir, ("train", "test"))
    train = load_labelled_images(data_dir, "train", args.image_size)
    test = load_labelled_images(data_dir, "test", train.images.shape[1], train.class_names)
    print(f"{len(train.images)} training and {len(test.images)} test images of "
          f"{len(train.class_names)} classes ({', '.join(train.class_names)})", flush=True)
    model, accuracy = train_classifier(train, test, args.epochs, args.batch_size, args.seed,
                                       args.feature_size)
    report = save_classifier(model, args.out, accuracy, {
        "classes": list(train.class_names), "epochs": args.epochs, "seed": args.seed,
        "batch_size": args.batch_size, "feature_size": args.feature_size,
        "train_images": len(train.images), "test_images": len(test.images),
        "data_dir": args.data_dir})
    print(f"train accuracy {accuracy.train:.4f}, test accuracy {accuracy.test:.4f}")
    print(f"wrote {args.out} and {report}")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = cli.parser("training.feature_classifier", __doc__)
    parser.add_argument("--data-dir", required=True,
                        help="folder or .tar.gz of train/<class>/<image> and "
                             "test/<class>/<image> files")
    parser.add_argument("--out", required=True, help="the .keras model to write")
    parser.add_argument("--epochs", type=cli.positive_int, default=5,
                        help="passes over the training images")
    parser.add_argument("--batch-size", type=cli.positive_int, default=128,
                        help="images per step")
    parser.add_argument("--seed", type=cli.random_seed, default=0,
                        help="seed of the initialization, shuffling and flips (default: 0)")
    parser.add_argument("--feature-size", type=cli.positive_int, default=256,
                        help="width of the feature layer")
    parser.add_argument("--image-size", type=cli.positive_int,
                        help="crop and resize the images to this side (default: their own "
                             "size, which all must share)")
    return parser


if __name__ == "__main__":
    sys.exit(main())
