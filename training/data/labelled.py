"""Labelled images: a folder (or archive) of `<split>/<class>/<image>` files, as arrays.

The layout of the shared CIFAR-10 JPEGs (`train/airplane/0001.jpg`, ..., `test/truck/...`)
and of `torchvision.datasets.ImageFolder` split in two. Each class folder is read as a
`folder` source (`training.data.folders`), so decoding, skipping of unreadable files and
archive extraction are those of the training data.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from training.data.archives import extract_once, is_archive
from training.data.folders import _visible_entries, folder_source
from training.errors import DataError, DataPathError

# Images decoded per transfer into the arrays; CIFAR-10's 50,000 take 13 batches.
_DECODE_BATCH = 4096


@dataclasses.dataclass(frozen=True)
class LabelledImages:
    """uint8 images `(N, S, S, 3)`, their class indices `(N,)`, and the class names (folder
    names, sorted: a label indexes this list)."""

    images: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]


def check_labelled_folder(data_dir: Path, splits: tuple[str, ...]) -> None:
    """Checks, without decoding an image, that `data_dir` holds each split's class folders
    (an archive is extracted into the cache first).

    Raises:
        DataError: a split, or its class folders, are missing.
        DataPathError: `data_dir` does not exist.
    """
    top = _top_folder(data_dir)
    for split in splits:
        _class_folders(top, split, data_dir)


def load_labelled_images(data_dir: Path, split: str, image_size: int | None = None,
                         class_names: tuple[str, ...] | None = None) -> LabelledImages:
    """Decodes the images of one split, labelled by their class folder.

    Args:
        data_dir: a folder, or an archive of one, holding `<split>/<class>/<image>` files
            (possibly under one wrapping folder, as archives often have).
        split: the split folder's name, e.g. "train" or "test".
        image_size: side S to crop and resize to; None keeps the size of the first class's
            images (which must share it), and brings the other classes to it.
        class_names: the classes the labels must index (those of another split), in order;
            None takes this split's folders.

    Returns:
        The images in class order (shuffle them to train).

    Raises:
        DataError: the split or its class folders are missing, a class has no readable
            image, or the classes differ from `class_names`.
        DataPathError: `data_dir` does not exist.
    """
    folders = _class_folders(_top_folder(data_dir), split, data_dir)
    names = tuple(folder.name for folder in folders)
    if class_names is not None and names != class_names:
        raise DataError(f"The {split} classes of {data_dir} ({', '.join(names)}) differ from "
                        f"the other split's ({', '.join(class_names)}); give both splits the "
                        "same class folders.")
    images, labels = [], []
    for label, folder in enumerate(folders):
        source = folder_source(folder, split, image_size, crop_size=None, antialias=True)
        if image_size is None:
            image_size = source.size
        for batch in source.images.batch(_DECODE_BATCH):
            images.append(batch.numpy())
            labels.append(np.full(len(images[-1]), label, np.int32))
    return LabelledImages(np.concatenate(images), np.concatenate(labels), names)


def _top_folder(data_dir: Path) -> Path:
    if not data_dir.exists():
        raise DataPathError(f"Data path {data_dir} does not exist; check --data-dir (a folder "
                            "of <split>/<class>/<image> files or a .tar.gz of one).")
    if data_dir.is_dir():
        return data_dir
    if not is_archive(data_dir):
        raise DataError(f"--data-dir {data_dir} is neither a folder nor a .tar.gz/.tgz of one; "
                        "give a folder of <split>/<class>/<image> files or an archive of it.")
    return extract_once(data_dir)


def _class_folders(top: Path, split: str, data_dir: Path) -> list[Path]:
    """The sorted class folders of `split`, found under any single wrapping folders."""
    folder = top
    while not (folder / split).is_dir():
        entries = _visible_entries(folder)
        if len(entries) != 1 or not entries[0].is_dir():
            raise DataError(f"{data_dir} has no {split}/ folder; labelled images are read from "
                            f"{split}/<class>/<image> files (e.g. {split}/cat/0001.jpg).")
        folder = entries[0]
    classes = sorted(entry for entry in _visible_entries(folder / split) if entry.is_dir())
    if len(classes) < 2:
        raise DataError(f"{folder / split} has {len(classes)} class folder(s); a classifier "
                        f"needs at least 2: put each class's images in {split}/<class>/.")
    return classes
