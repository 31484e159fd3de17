"""Tests for training.data: real CIFAR-10 and CelebA files, NumPy arrays, mocked TFDS, bad input."""

import contextlib
import io
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from PIL import Image

from training import data
from training.data import archives, folders, pipeline
from training.errors import DataError
from training.presets import preset

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
CIFAR_ARCHIVE = SHARED_DATA / "cifar10-jpeg.tar.gz"
CELEBA_ARCHIVE = SHARED_DATA / "celeba-aligned-sample.tar.gz"


def as_uint8(images) -> np.ndarray:
    """Undoes the [-1, 1] scaling exactly (the pipeline scales uint8 images)."""
    return np.round((np.asarray(images) + 1.0) * 127.5).astype(np.uint8)


def pil_rgb(source) -> np.ndarray:
    with Image.open(source) as image:
        return np.asarray(image.convert("RGB"))


def pil_square(image: np.ndarray, size: int, crop_size: int | None = None) -> np.ndarray:
    """The reference preprocessing: centre crop, then PIL's bilinear resize."""
    height, width = image.shape[:2]
    side = crop_size or min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    crop = Image.fromarray(image[top : top + side, left : left + side])
    return np.asarray(crop.resize((size, size), Image.BILINEAR))


def save_png(path: Path, image: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)
    return path


def solid(value: int, shape=(8, 8, 3)) -> np.ndarray:
    return np.full(shape, value, np.uint8)


def take(dataset: tf.data.Dataset, count: int) -> np.ndarray:
    return np.stack([element.numpy() for element in dataset.take(count)])


@pytest.fixture(scope="session")
def cache_root(tmp_path_factory) -> Path:
    assert CIFAR_ARCHIVE.is_file(), f"shared test data missing: {SHARED_DATA}"
    return tmp_path_factory.mktemp("keras_bssn_cache")


@pytest.fixture(autouse=True)
def _cache_in_tmp(cache_root, monkeypatch):
    """Archives extract into one cache per session, never into the user's ~/.cache."""
    monkeypatch.setenv("KERAS_BSSN_CACHE", str(cache_root))


@pytest.fixture(scope="session")
def cifar_folder(cache_root) -> Path:
    """The CIFAR-10 archive's cache entry, extracted once per session (the slow part)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("KERAS_BSSN_CACHE", str(cache_root))
        data.load_images("folder", str(CIFAR_ARCHIVE))
    (entry,) = (cache_root / "datasets").glob("cifar10-jpeg-*")
    return entry


@pytest.fixture(scope="session")
def cifar_test_files(cifar_folder) -> dict[bytes, Path]:
    """PIL's decode of every CIFAR-10 test image (as bytes) -> its file."""
    return {pil_rgb(path).tobytes(): path for path in sorted(cifar_folder.glob("test/*/*.jpg"))}


# CIFAR-10 through the folder loader.


def test_cifar_archive_trains_in_batches():
    dataset = data.make_train_dataset(
        "folder", str(CIFAR_ARCHIVE), batch_size=16, seed=0, shuffle_buffer=256
    )
    assert dataset.element_spec.shape == (16, 32, 32, 3)
    batches = take(dataset, 3)
    assert batches.dtype == np.float32
    assert batches.min() >= -1.0 and batches.max() <= 1.0
    assert batches.min() == -1.0 and batches.max() == 1.0  # Full range, not [0, 1].
    assert len({image.tobytes() for image in batches.reshape(48, -1)}) == 48


def test_cifar_test_split_matches_pil_and_mixes_classes(cifar_test_files):
    images = as_uint8(take(data.load_images("folder", str(CIFAR_ARCHIVE), split="test"), 100))
    files = [cifar_test_files.get(image.tobytes()) for image in images]
    # Every image equals PIL's decode of a test file, pixel for pixel.
    assert None not in files
    # A prefix is a fair sample: evaluation takes the first N images.
    assert len({file.parent.name for file in files}) >= 8


def test_cifar_train_split_reads_train_folder(cifar_test_files):
    images = as_uint8(take(data.load_images("folder", str(CIFAR_ARCHIVE), split="train"), 100))
    # All 60,000 images in the archive would put about 17 test images among these.
    assert not any(image.tobytes() in cifar_test_files for image in images)


def test_second_load_reuses_extracted_archive(cifar_folder, monkeypatch):
    def extract_again(*args):
        raise AssertionError("extracted the archive again")

    monkeypatch.setattr(archives, "_extract_archive", extract_again)
    images = take(data.load_images("folder", str(CIFAR_ARCHIVE), split="test"), 2)
    assert images.shape == (2, 32, 32, 3)
    assert [entry.name for entry in cifar_folder.parent.glob("cifar10-jpeg-*")] == [
        cifar_folder.name
    ]


class _Interrupted(Exception):
    pass


@pytest.mark.parametrize("cleanup_runs", [True, False], ids=["exception", "killed"])
def test_interrupted_extraction_does_not_poison_cache(cleanup_runs, tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_BSSN_CACHE", str(tmp_path))
    copy_file = shutil.copyfileobj
    copied = []

    def copy_three_then_fail(source, target, *args):
        if len(copied) == 3:
            raise _Interrupted
        copied.append(target)
        copy_file(source, target, *args)

    with monkeypatch.context() as patch:
        patch.setattr(shutil, "copyfileobj", copy_three_then_fail)
        if not cleanup_runs:  # A killed process runs no cleanup code.
            patch.setattr(archives.shutil, "rmtree", lambda *args, **kwargs: None)
        with pytest.raises(_Interrupted):
            data.load_images("folder", str(CELEBA_ARCHIVE))

    leftovers = sorted((tmp_path / "datasets").iterdir())
    assert len(leftovers) == (0 if cleanup_runs else 1)
    images = take(data.load_images("folder", str(CELEBA_ARCHIVE)), 100)
    assert images.shape == (32, 178, 178, 3)
    assert len(sorted((tmp_path / "datasets").iterdir())) == len(leftovers) + 1


def test_extraction_removes_stale_staging_folders(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_BSSN_CACHE", str(tmp_path / "cache"))
    cache = tmp_path / "cache" / "datasets"
    finished = subprocess.Popen([sys.executable, "-c", ""])
    finished.wait()
    here = archives._pid_space()

    def staging(tag: str, age_seconds: float = 0) -> Path:
        folder = cache / f"faces-0123456789ab.partial-{tag}"
        save_png(folder / "half" / "0.png", solid(0))
        then = time.time() - age_seconds
        for path in (folder / "half" / "0.png", folder / "half", folder):
            os.utime(path, (then, then))
        return folder

    killed = staging(f"{here}-{finished.pid}-killed00")  # kill -9 of a process on this host
    running = staging(f"{here}-{os.getpid()}-running0")
    # Unchecked owners (another host's process, an older version's folder): by age.
    abandoned = staging(f"{'0' * 8}-1-abandon0", age_seconds=2 * 3600)
    elsewhere = staging(f"{'0' * 8}-1-elsewher")
    old_style = staging("oldstyle", age_seconds=2 * 3600)
    archive = tar_gz(image_folder(tmp_path / "source", bad=False), tmp_path / "faces.tgz")

    assert take(data.load_images("folder", str(archive)), 100).shape == (5, 32, 32, 3)
    assert not killed.exists() and not abandoned.exists() and not old_style.exists()
    assert running.is_dir() and elsewhere.is_dir()
    (entry,) = set(cache.iterdir()) - {running, elsewhere}
    assert re.fullmatch("faces-[0-9a-f]{12}", entry.name)
    assert len(list(entry.rglob("*.*"))) == 5


def test_changed_archive_gets_new_cache_entry(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_BSSN_CACHE", str(tmp_path / "cache"))
    archive = shutil.copy(CELEBA_ARCHIVE, tmp_path / "faces.tgz")
    data.load_images("folder", str(archive))
    os.utime(archive, (0, 0))  # Same path, new modification time: maybe new content.
    data.load_images("folder", str(archive))
    entries = sorted(path.name for path in (tmp_path / "cache" / "datasets").iterdir())
    assert len(entries) == 2 and all(name.startswith("faces-") for name in entries)


# CelebA sample and other image folders.


@pytest.mark.parametrize("crop_size", [None, 128], ids=["largest-square", "papers-crop"])
def test_celeba_sample_is_centre_cropped_and_resized(crop_size):
    images = as_uint8(take(data.load_images("folder", str(CELEBA_ARCHIVE), image_size=64,
                                            crop_size=crop_size), 100))
    assert images.shape == (32, 64, 64, 3)
    with tarfile.open(CELEBA_ARCHIVE) as tar:
        faces = [pil_rgb(tar.extractfile(member)) for member in tar if member.isfile()]
    expected = [pil_square(face, 64, crop_size) for face in faces]
    for image in images:
        # Antialiased bilinear matches PIL to within rounding; plain bilinear does not.
        assert min(np.abs(image.astype(int) - reference).max() for reference in expected) <= 1


def test_folder_reads_every_format_as_rgb(tmp_path):
    rng = np.random.default_rng(0)
    colours = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)
    gray = rng.integers(0, 256, (6, 6), dtype=np.uint8)
    rgba = np.concatenate([colours[::-1], np.full((6, 6, 1), 9, np.uint8)], axis=-1)
    few_colours = np.where(colours > 127, 255, 0).astype(np.uint8)  # GIF: no palette loss.
    Image.fromarray(colours).save(tmp_path / "a.png")
    Image.fromarray(colours[:, ::-1]).save(tmp_path / "b.BMP")
    Image.fromarray(colours[::-1, ::-1]).save(tmp_path / "c.webp", lossless=True)
    Image.fromarray(gray).save(tmp_path / "d.png")
    Image.fromarray(rgba).save(tmp_path / "e.png")
    (tmp_path / "class").mkdir()
    first, second = Image.fromarray(few_colours), Image.fromarray(255 - few_colours)
    first.save(tmp_path / "class" / "f.gif", save_all=True, append_images=[second])
    Image.fromarray(colours.transpose(1, 0, 2)).save(tmp_path / "class" / "g.jpeg")
    (tmp_path / "._a.png").write_bytes(b"macOS resource fork, not an image")
    (tmp_path / "notes.txt").write_text("not an image")
    expected = [
        colours,
        colours[:, ::-1],
        colours[::-1, ::-1],
        np.repeat(gray[..., np.newaxis], 3, axis=-1),
        colours[::-1],  # Alpha dropped, colours kept as stored.
        few_colours,  # First frame.
        pil_rgb(tmp_path / "class" / "g.jpeg"),  # Decoded as PIL decodes JPEG.
    ]

    images = as_uint8(take(data.load_images("folder", str(tmp_path)), 100))

    def sort(arrays):
        return sorted(array.tobytes() for array in arrays)

    assert sort(images) == sort(expected)


def test_folder_archive_with_wrapper_folder_picks_split(tmp_path):
    source = tmp_path / "source"
    save_png(source / "wrapper" / "train" / "cat" / "1.png", solid(10))
    save_png(source / "wrapper" / "train" / "dog" / "2.png", solid(20))
    save_png(source / "wrapper" / "test" / "cat" / "3.png", solid(30))
    archive = tmp_path / "pets.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(source / "wrapper", arcname="wrapper")

    def values(split):
        images = take(data.load_images("folder", str(archive), split=split), 100)
        return sorted(as_uint8(images)[:, 0, 0, 0])

    assert values("train") == [10, 20]
    assert values("test") == [30]
    assert values("validation") == [10, 20, 30]  # No such folder: all images.


def test_folder_without_image_size_crops_the_largest_square(tmp_path):
    image = np.random.default_rng(1).integers(0, 256, (10, 6, 3), dtype=np.uint8)
    save_png(tmp_path / "tall.png", image)
    dataset = data.load_images("folder", str(tmp_path))
    assert dataset.element_spec.shape == (6, 6, 3)
    np.testing.assert_array_equal(as_uint8(take(dataset, 1))[0], image[2:8])


def test_folder_with_mixed_sizes_needs_image_size(tmp_path):
    save_png(tmp_path / "a.png", solid(1, (8, 8, 3)))
    save_png(tmp_path / "b.png", solid(2, (6, 10, 3)))
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"[ab]\.png.*image_size"):
        take(data.load_images("folder", str(tmp_path)), 100)
    images = take(data.load_images("folder", str(tmp_path), image_size=4), 100)
    assert images.shape == (2, 4, 4, 3)


# NumPy arrays.


def test_npz_round_trip_keeps_order_and_values(tmp_path):
    images = np.random.default_rng(2).integers(0, 256, (5, 4, 4, 3), dtype=np.uint8)
    np.savez(tmp_path / "images.npz", x=images)
    loaded = take(data.load_images("npz", str(tmp_path / "images.npz")), 100)
    assert loaded.dtype == np.float32
    np.testing.assert_array_equal(loaded, images.astype(np.float32) / 127.5 - 1.0)


@pytest.mark.parametrize("shape", [(3, 4, 4), (3, 4, 4, 1)], ids=["NHW", "NHW1"])
def test_npy_grayscale_becomes_rgb(shape, tmp_path):
    gray = np.arange(np.prod(shape), dtype=np.uint8).reshape(shape)
    np.save(tmp_path / "gray.npy", gray)
    loaded = as_uint8(take(data.load_images("npz", str(tmp_path / "gray.npy")), 100))
    np.testing.assert_array_equal(loaded, np.repeat(gray.reshape(3, 4, 4, 1), 3, axis=-1))


def test_npz_float_images_in_unit_range_round_trip(tmp_path):
    images = np.random.default_rng(3).integers(0, 256, (4, 4, 4, 3)) / 127.5 - 1.0
    np.savez(tmp_path / "floats.npz", images=images.astype(np.float32))
    loaded = take(data.load_images("npz", str(tmp_path / "floats.npz")), 100)
    np.testing.assert_allclose(loaded, images, atol=1e-6)


def test_npz_split_keys_and_single_key(tmp_path):
    np.savez(tmp_path / "split.npz", x_train=solid(1, (2, 4, 4, 3)), x_test=solid(2, (1, 4, 4, 3)))
    np.savez(tmp_path / "single.npz", faces=solid(3, (2, 4, 4, 3)))

    def values(name, split="train"):
        loaded = take(data.load_images("npz", str(tmp_path / name), split=split), 100)
        return list(as_uint8(loaded)[:, 0, 0, 0])

    assert values("split.npz") == [1, 1]
    assert values("split.npz", "test") == [2]
    assert values("single.npz", "test") == [3, 3]


def test_npz_non_square_images_are_cropped_and_resized(tmp_path):
    images = np.random.default_rng(4).integers(0, 256, (2, 12, 8, 3), dtype=np.uint8)
    np.save(tmp_path / "wide.npy", images)
    cropped = as_uint8(take(data.load_images("npz", str(tmp_path / "wide.npy")), 100))
    np.testing.assert_array_equal(cropped, images[:, 2:10])
    resized = as_uint8(take(data.load_images("npz", str(tmp_path / "wide.npy"), image_size=4), 100))
    for image, source in zip(resized, images):
        assert np.abs(image.astype(int) - pil_square(source, 4)).max() <= 1


def test_crop_size_without_image_size_keeps_the_crop(tmp_path):
    images = np.random.default_rng(5).integers(0, 256, (2, 12, 8, 3), dtype=np.uint8)
    np.save(tmp_path / "tall.npy", images)
    cropped = as_uint8(take(data.load_images("npz", str(tmp_path / "tall.npy"), crop_size=6), 9))
    np.testing.assert_array_equal(cropped, images[:, 3:9, 1:7])


def test_a_crop_larger_than_the_images_is_refused_before_any_is_read(tmp_path):
    np.save(tmp_path / "small.npy", np.zeros((1, 12, 8, 3), np.uint8))
    with pytest.raises(DataError, match=r"--crop-size 10 is larger than the images in .*small"
                       r"\.npy \(12x8 pixels\); give at most 8, or no --crop-size"):
        data.load_images("npz", str(tmp_path / "small.npy"), crop_size=10)
    save_png(tmp_path / "pngs" / "a.png", solid(0))
    with pytest.raises(DataError, match=r"--crop-size 10 is larger than the first image in "
                       r".*pngs \(8x8 pixels\)"):
        data.load_images("folder", str(tmp_path / "pngs"), crop_size=10)
    with pytest.raises(ValueError, match="crop_size must be positive"):
        data.load_images("npz", str(tmp_path / "small.npy"), crop_size=0)


def test_a_later_image_smaller_than_the_crop_fails_where_it_is_decoded(tmp_path):
    folder = tmp_path / "pngs"
    for name in ("a.png", "b.png"):
        save_png(folder / name, solid(0, (16, 16, 3)))
    _, later = folders._image_files(folder)  # the listing's order, not the names'
    save_png(Path(later), solid(0))
    with pytest.raises(tf.errors.InvalidArgumentError, match="smaller than the crop size 10"):
        take(data.load_images("folder", str(folder), image_size=8, crop_size=10), 2)


# TFDS datasets, mocked (no downloads).


@pytest.fixture
def mock_tfds():
    with tfds.testing.mock_data(num_examples=3, policy=tfds.testing.MockPolicy.USE_CODE):
        yield


def raw_tfds_images(name: str) -> list[np.ndarray]:
    """The mocked dataset's images as PIL decodes them."""
    examples = tfds.builder(name).as_dataset(
        split="train", decoders={"image": tfds.decode.SkipDecoding()}
    )
    return [pil_rgb(io.BytesIO(example["image"].numpy())) for example in examples]


@pytest.mark.parametrize(
    "name, size, crop_size",
    [("cifar10", 32, None), ("stl10", 48, None), ("celeb_a", 64, 128), ("imagenet2012", 128, None)],
)
def test_tfds_datasets_get_the_papers_preprocessing(name, size, crop_size, mock_tfds, tmp_path):
    dataset = data.load_images(name, data_dir=str(tmp_path))
    assert dataset.element_spec == tf.TensorSpec((size, size, 3), tf.float32)
    images = as_uint8(take(dataset, 100))
    expected = [pil_square(image, size, crop_size) for image in raw_tfds_images(name)]
    assert len(images) == len(expected) == 3
    for image, reference in zip(images, expected):
        assert np.abs(image.astype(int) - reference).max() <= 1


def test_tfds_image_size_overrides_reference_size(mock_tfds, tmp_path):
    dataset = data.load_images("cifar10", data_dir=str(tmp_path), image_size=16)
    assert take(dataset, 100).shape == (3, 16, 16, 3)


def test_a_crop_larger_than_a_tfds_data_sets_images_is_refused(mock_tfds, tmp_path):
    with pytest.raises(DataError, match=r"--crop-size 40 is larger than the images of cifar10 "
                       r"\(32x32 pixels\)"):
        data.load_images("cifar10", data_dir=str(tmp_path), crop_size=40)


@contextlib.contextmanager
def recorded_tfds_splits():
    """Within the block (inside `mock_tfds`), the TFDS splits asked for, in order."""
    as_dataset = tfds.core.DatasetBuilder.as_dataset  # The mocked one.
    requested = []

    def recording_as_dataset(self, split, **kwargs):
        requested.append(split)
        return as_dataset(self, split=split, **kwargs)

    # Undone before mock_tfds restores the real method (the monkeypatch fixture would be later).
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tfds.core.DatasetBuilder, "as_dataset", recording_as_dataset)
        yield requested


def test_stl10_train_split_adds_unlabelled_images(mock_tfds, tmp_path):
    with recorded_tfds_splits() as requested:
        for split in ("train", "test", "unlabelled"):
            data.load_images("stl10", data_dir=str(tmp_path), split=split)
    assert requested == ["unlabelled+train", "test", "unlabelled"]


@pytest.mark.parametrize("preset_name, dataset, split, tfds_split", [
    ("stl10-cnn-bssn", "stl10", "unlabelled", "unlabelled"),
    ("celeba-cnn-bssn", "celeb_a", "all", "train+validation+test")])
def test_the_stl10_and_celeba_presets_read_the_official_images(preset_name, dataset, split,
                                                               tfds_split, mock_tfds, tmp_path):
    # The official preprocessing: STL10's unlabelled images, all of CelebA, cv2.resize's
    # bilinear interpolation without antialiasing.
    config = preset(preset_name)
    assert (config.dataset, config.split, config.antialias) == (dataset, split, False)
    with recorded_tfds_splits() as requested:
        data.load_images(**{**config.data_source(), "data_dir": str(tmp_path)})
    assert requested == [tfds_split]


def test_tfds_download_failure_says_how_to_work_offline(tmp_path, monkeypatch):
    def no_network(self, *args, **kwargs):
        raise ConnectionError("Name or service not known")

    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", no_network)
    with pytest.raises(RuntimeError, match="cifar10") as error:
        data.load_images("cifar10", data_dir=str(tmp_path))
    assert "Name or service not known" in str(error.value)
    assert "--dataset folder --data-dir ../shared/data/cifar10-jpeg.tar.gz" in str(error.value)


def test_imagenet_without_manual_download_says_where_to_put_it(tmp_path):
    with pytest.raises(RuntimeError, match="ILSVRC2012_img_train.tar") as error:
        data.load_images("imagenet2012", data_dir=str(tmp_path))
    assert str(tmp_path) in str(error.value)


# make_train_dataset.


@pytest.fixture
def numbered_npz(tmp_path) -> str:
    """Ten 4x4 images; image i is filled with the value i."""
    path = tmp_path / "numbered.npz"
    np.savez(path, x=np.stack([solid(value, (4, 4, 3)) for value in range(10)]))
    return str(path)


def batch_ids(dataset: tf.data.Dataset, num_batches: int) -> np.ndarray:
    return as_uint8(take(dataset, num_batches))[:, :, 0, 0, 0]


def test_train_dataset_shuffles_each_epoch_and_repeats(numbered_npz):
    dataset = data.make_train_dataset("npz", numbered_npz, batch_size=4, seed=1)
    assert dataset.element_spec == tf.TensorSpec((4, 4, 4, 3), tf.float32)
    ids = batch_ids(dataset, 10).ravel()  # 40 images: four epochs of ten.
    epochs = ids.reshape(4, 10)
    for epoch in epochs:
        assert sorted(epoch) == list(range(10))
    assert len({tuple(epoch) for epoch in epochs}) == 4
    assert tuple(epochs[0]) != tuple(range(10))


def test_each_pass_of_cached_data_is_a_uniform_shuffle_of_all_of_it(tmp_path):
    # More images than the fixed buffer of releases before 0.3; image i encodes i.
    count = 12_000
    ids = np.arange(count)
    images = np.zeros((count, 2, 2, 3), np.uint8)
    images[..., 0], images[..., 1] = (ids % 256)[:, None, None], (ids // 256)[:, None, None]
    np.savez(tmp_path / "many.npz", x=images)

    def first_pass(**options):
        dataset = data.make_train_dataset("npz", str(tmp_path / "many.npz"), batch_size=100,
                                          seed=0, **options)
        pixels = as_uint8(take(dataset, count // 100))
        return (pixels[:, :, 0, 0, 0].astype(int) + 256 * pixels[:, :, 0, 0, 1].astype(int)).ravel()

    uniform = first_pass()
    assert sorted(uniform) == list(range(count))
    # The first batch draws from all of the data set (about 1 in 6 from its last 1,900)...
    assert uniform[:100].max() >= 10_100
    # ...where a 10,000-image buffer draws only from the first 10,099 images.
    assert first_pass(shuffle_buffer=10_000)[:100].max() < 10_100


def test_train_dataset_order_follows_seed(numbered_npz):
    def first_batches(seed):
        dataset = data.make_train_dataset("npz", numbered_npz, batch_size=5, seed=seed)
        return batch_ids(dataset, 6).tolist()

    assert first_batches(7) == first_batches(7)
    assert first_batches(7) != first_batches(8)


def test_train_dataset_resumes_the_uninterrupted_stream(numbered_npz):
    uninterrupted = batch_ids(data.make_train_dataset("npz", numbered_npz, 4, seed=3), 9)
    # Batch 5 starts mid-epoch and the resumed stream crosses two more epoch boundaries.
    resumed = data.make_train_dataset("npz", numbered_npz, 4, seed=3, start_batch=5)
    np.testing.assert_array_equal(batch_ids(resumed, 4), uninterrupted[5:])


def test_train_dataset_reseeds_a_resume_it_cannot_skip_to(numbered_npz):
    def first_batches(start_batch):
        dataset = data.make_train_dataset("npz", numbered_npz, 4, seed=3, cache=False,
                                          start_batch=start_batch)
        return batch_ids(dataset, 3)

    assert not np.array_equal(first_batches(0), first_batches(5))
    np.testing.assert_array_equal(first_batches(5), first_batches(5))


@pytest.mark.parametrize(
    "cache, limit, decodes_once",
    [(True, None, True), (False, None, False), (True, 0, False)],
    ids=["cached", "not-cached", "too-big-to-cache"],
)
def test_train_dataset_caches_decoded_images(cache, limit, decodes_once, tmp_path, monkeypatch):
    if limit is not None:
        monkeypatch.setattr(pipeline, "MEMORY_CACHE_LIMIT_BYTES", limit)
    files = [save_png(tmp_path / f"{value}.png", solid(value)) for value in range(8)]
    dataset = data.make_train_dataset(
        "folder", str(tmp_path), batch_size=4, seed=0, shuffle_buffer=8, cache=cache
    )
    iterator = iter(dataset)
    for _ in range(3):  # Past the end of the first epoch.
        next(iterator)
    for file in files:
        file.unlink()
    if decodes_once:
        for _ in range(6):
            next(iterator)
    else:
        # Every file skipped as unreadable: the pass ends with an error naming the folder.
        message = f"None of the 8 image files in {re.escape(str(tmp_path))} could be read"
        with pytest.raises(tf.errors.InvalidArgumentError, match=message):
            for _ in range(6):
                next(iterator)


# Bad input: every error names the file or the problem.


def test_unknown_dataset_lists_valid_names():
    with pytest.raises(ValueError, match="cifar10, stl10, celeb_a, imagenet2012, folder, npz"):
        data.load_images("mnist")


@pytest.mark.parametrize("dataset", ["folder", "npz"])
def test_missing_path_or_data_dir_is_named(dataset, tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.npz"):
        data.load_images(dataset, str(tmp_path / "nowhere.npz"))
    with pytest.raises(ValueError, match=f"--dataset {dataset} needs --data-dir"):
        data.load_images(dataset)


def test_folder_without_images_is_refused(tmp_path):
    for contents in ([], ["README.txt"], ["README.txt", ".hidden.png"]):
        for name in contents:
            (tmp_path / name).write_text("not an image")
        message = f"No image files .* found in {re.escape(str(tmp_path))}"
        with pytest.raises(ValueError, match=message):
            data.load_images("folder", str(tmp_path))


BAD_IMAGES = ["empty.jpg", "bad/garbage.jpg", "bad/truncated.jpg"]


def image_folder(folder: Path, good: bool = True, bad: bool = True) -> Path:
    """Five readable 32x32 images (PNG and JPEG) and the three unreadable `BAD_IMAGES`."""
    rng = np.random.default_rng(6)
    photos = [rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(5)]
    if good:
        for number, photo in enumerate(photos[:4]):
            save_png(folder / "good" / f"{number}.png", photo)
        Image.fromarray(photos[4]).save(folder / "photo.jpg", quality=95)
    if bad:
        (folder / "bad").mkdir(parents=True)
        (folder / "empty.jpg").write_bytes(b"")  # A copy cut short before its first byte.
        (folder / "bad" / "garbage.jpg").write_bytes(rng.bytes(2000))
        jpeg = io.BytesIO()
        Image.fromarray(photos[4]).save(jpeg, format="JPEG", quality=95)
        (folder / "bad" / "truncated.jpg").write_bytes(jpeg.getvalue()[:-500])
    return folder


def tar_gz(folder: Path, archive: Path) -> Path:
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname="pets")
    return archive


def assert_warned_of_bad_images(stderr: str, data_dir: Path, prefix: str = "") -> None:
    for name in BAD_IMAGES:
        assert f"warning: skipped unreadable image in {data_dir}: {prefix}{name} (" in stderr
    summary = f"warning: skipped 3 unreadable image(s) of 8 in {data_dir}; using the other 5."
    assert summary in stderr


def test_unreadable_images_are_skipped_with_a_warning(tmp_path, capfd):
    folder = image_folder(tmp_path / "mixed")
    readable = as_uint8(take(data.load_images("folder", str(folder)), 100))
    assert_warned_of_bad_images(capfd.readouterr().err, folder)
    # The readable images, decoded and ordered as if the bad files had never been there.
    expected = take(data.load_images("folder", str(image_folder(tmp_path / "good", bad=False))),
                    100)
    np.testing.assert_array_equal(readable, as_uint8(expected))
    assert "warning:" not in capfd.readouterr().err


def test_unreadable_images_in_an_archive_are_named_as_inside_it(tmp_path, capfd):
    archive = tar_gz(image_folder(tmp_path / "mixed"), tmp_path / "pets.tar.gz")
    assert take(data.load_images("folder", str(archive)), 100).shape == (5, 32, 32, 3)
    assert_warned_of_bad_images(capfd.readouterr().err, archive, prefix="pets/")


def test_training_skips_unreadable_images_and_resumes_exactly(tmp_path, capfd):
    def batches(folder, start_batch=0, skipped_log=None):
        dataset = data.make_train_dataset("folder", str(folder), batch_size=3, seed=0,
                                          shuffle_buffer=8, start_batch=start_batch,
                                          skipped_log=skipped_log)
        return take(dataset, 6 - start_batch)

    mixed = image_folder(tmp_path / "mixed")
    log = tmp_path / "run" / "skipped_images.log"
    log.parent.mkdir()
    uninterrupted = batches(mixed, skipped_log=log)  # 18 images: into the fourth pass.
    assert_warned_of_bad_images(capfd.readouterr().err, mixed)
    assert_warned_of_bad_images(log.read_text(), mixed)  # the run folder keeps the count too
    np.testing.assert_array_equal(uninterrupted,
                                  batches(image_folder(tmp_path / "good", bad=False)))
    np.testing.assert_array_equal(batches(mixed, start_batch=4), uninterrupted[4:])


@pytest.mark.parametrize("packed", [False, True], ids=["folder", "archive"])
def test_data_without_a_readable_image_is_refused_up_front(packed, tmp_path):
    data_dir = image_folder(tmp_path / "bad", good=False)
    if packed:
        data_dir = tar_gz(data_dir, tmp_path / "bad.tar.gz")
    message = (f"None of the 3 image files in {re.escape(str(data_dir))} can be read as an "
               r"image \(empty, truncated .*\): .*garbage\.jpg.*download or extract")
    with pytest.raises(ValueError, match=message):
        data.load_images("folder", str(data_dir))


def test_wrong_file_kind_points_to_other_loader(tmp_path):
    np.save(tmp_path / "images.npy", solid(0, (1, 4, 4, 3)))
    save_png(tmp_path / "image.png", solid(0))
    with pytest.raises(ValueError, match="--dataset npz"):
        data.load_images("folder", str(tmp_path / "images.npy"))
    with pytest.raises(ValueError, match="--dataset folder"):
        data.load_images("npz", str(tmp_path / "image.png"))


def test_corrupt_archive_is_named(tmp_path):
    archive = tmp_path / "broken.tar.gz"
    archive.write_bytes(b"\x1f\x8b" + bytes(100))
    with pytest.raises(ValueError, match="Could not read archive .*broken.tar.gz"):
        data.load_images("folder", str(archive))


def test_archive_member_outside_its_folder_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_BSSN_CACHE", str(tmp_path / "cache"))
    archive = tmp_path / "evil.tar.gz"
    payload = save_png(tmp_path / "payload.png", solid(0)).read_bytes()
    with tarfile.open(archive, "w:gz") as tar:
        member = tarfile.TarInfo("../escaped.png")
        member.size = len(payload)
        tar.addfile(member, io.BytesIO(payload))
    with pytest.raises(ValueError, match="outside its folder: '../escaped.png'"):
        data.load_images("folder", str(archive))
    assert not list(tmp_path.rglob("escaped.png"))
    assert not list((tmp_path / "cache" / "datasets").iterdir())


def test_unreadable_array_files_are_named(tmp_path):
    (tmp_path / "garbage.npz").write_bytes(b"not a zip")
    np.save(tmp_path / "objects.npy", np.array([{"image": 1}], dtype=object), allow_pickle=True)
    for name in ("garbage.npz", "objects.npy"):
        with pytest.raises(ValueError, match=f"Could not read .*{name}"):
            data.load_images("npz", str(tmp_path / name))


def test_bad_arrays_are_refused_with_the_fix(tmp_path):
    cases = [
        (np.zeros((2, 4, 4, 2), np.uint8), r"shape \(2, 4, 4, 2\): expected"),
        (np.zeros((2, 4, 4, 4), np.uint8), r"x\[\.\.\., :3\]"),
        (np.zeros((2, 3, 8, 8), np.uint8), r"transpose\(0, 2, 3, 1\)"),
        (np.zeros((8, 8, 3), np.uint8), r"x\[np.newaxis\]"),
        (np.zeros((1, 2, 4, 4, 3), np.uint8), r"shape \(1, 2, 4, 4, 3\)"),
        (np.zeros((2, 4, 4, 3), np.int64), "int64 images"),
        (np.full((2, 4, 4, 3), 200.0), r"in \[200, 200\]"),
        (np.full((2, 4, 4, 3), 0.5, np.float32), r"Scale \[0, 1\] images"),
        (np.full((2, 4, 4, 3), np.nan), r"\[nan, nan\]"),
        (np.zeros((0, 4, 4, 3), np.uint8), "holds no images"),
    ]
    for number, (array, message) in enumerate(cases):
        path = tmp_path / f"bad{number}.npy"
        np.save(path, array)
        with pytest.raises(ValueError, match=rf"{path.name} .*{message}"):
            data.load_images("npz", str(path))


def test_npz_with_several_arrays_lists_them(tmp_path):
    np.savez(tmp_path / "many.npz", faces=solid(0, (1, 4, 4, 3)), labels=np.zeros(1))
    with pytest.raises(ValueError, match=r"many.npz holds arrays \['faces', 'labels'\]"):
        data.load_images("npz", str(tmp_path / "many.npz"))


def test_source_key_tells_local_sources_apart(tmp_path, numbered_npz):
    other = tmp_path / "other.npz"
    shutil.copy(numbered_npz, other)
    key = data.source_key("npz", numbered_npz, 32)
    assert key.startswith("npz-numbered.npz-") and key.endswith("-32")
    assert data.source_key("npz", numbered_npz, 32) == key
    assert data.source_key("npz", str(other), 32) != key
    assert data.source_key("npz", numbered_npz, 16) != key
    assert data.source_key("npz", numbered_npz, 32, crop_size=3) != key
    np.savez(numbered_npz, x=np.zeros((3, 4, 4, 3), np.uint8))  # replaced in place
    os.utime(numbered_npz, ns=(0, 0))
    assert data.source_key("npz", numbered_npz, 32) != key
    assert data.source_key("cifar10", "/wherever/tfds/lives", None) == "cifar10-native"
    with pytest.raises(FileNotFoundError, match="missing.npz does not exist"):
        data.source_key("npz", str(tmp_path / "missing.npz"), 32)


def test_sizes_must_be_positive(numbered_npz):
    with pytest.raises(ValueError, match="image_size"):
        data.load_images("npz", numbered_npz, image_size=0)
    with pytest.raises(ValueError, match="batch_size"):
        data.make_train_dataset("npz", numbered_npz, batch_size=0)
    with pytest.raises(ValueError, match="start_batch must be 0 or positive"):
        data.make_train_dataset("npz", numbered_npz, batch_size=2, start_batch=-1)
