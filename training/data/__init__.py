"""Input pipelines: real images as float32 in [-1, 1], the range the generators produce.

Three kinds of source, all yielding square RGB images of one size:

- TFDS datasets by name, preprocessed as in the paper: `cifar10` (32x32), `stl10` (96x96
  resized to 48x48), `celeb_a` (centre crop 128x128 of the aligned 178x218 faces, resized to
  64x64) and `imagenet2012` (largest centred square, resized to 128x128).
- `folder`: a folder of image files, or a `.tar.gz` of one (extracted once into a cache).
- `npz`: a `.npz` or `.npy` file holding an image array.

Images stay uint8 until the very end, as PIL-based reference pipelines keep them, so in-memory
caches and shuffle buffers take a quarter of the memory float32 would.

Modules: `pipeline` (what callers iterate), `sources` (which loader a name selects),
`tfds_datasets`, `folders` (with `archives`, the extraction cache) and `arrays` (the
loaders), `preprocessing` (what they share).
"""

from __future__ import annotations

from training.data.pipeline import load_images, make_train_dataset
from training.data.sources import DATASETS, report_source, source_key

__all__ = ["DATASETS", "load_images", "make_train_dataset", "report_source", "source_key"]
