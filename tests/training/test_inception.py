"""Feature extractors: the 2015 Inception graph loader (on a tiny look-alike), Keras models."""

import hashlib
import io
import re
import tarfile

import keras
import numpy as np
import pytest
import tensorflow as tf
from tests.training.fid_testing import (
    CLASSES,
    FEATURE_DIM,
    random_images,
    tiny_feature_model,
    tiny_generator,
)
from training import inception
from training.inception import FEATURES, PROBS
from tests.strategies import two_cpu_strategy


def _tiny_inception_graph_def() -> tf.compat.v1.GraphDef:
    """A frozen graph with the tensor names and shapes of `classify_image_graph_def.pb`.

    Like the real one it decodes a JPEG, adds the batch axis (`ExpandDims`), resizes to
    299x299, scales to [-1, 1], ends in `pool_3` (1, 1, 1, 2048), and computes its 1008
    logits from a `pool_3/_reshape` hard-coded to batch size 1.
    """
    rng = np.random.default_rng(0)

    def constant(shape, scale, name=None):
        return tf.constant((scale * rng.standard_normal(shape)).astype(np.float32), name=name)

    graph = tf.Graph()
    with graph.as_default():
        jpeg = tf.compat.v1.placeholder(tf.string, [], name="DecodeJpeg/contents")
        pixels = tf.cast(tf.io.decode_jpeg(jpeg, channels=3, name="DecodeJpeg"), tf.float32)
        batch = tf.expand_dims(pixels, 0, name="ExpandDims")
        resized = tf.compat.v1.image.resize_bilinear(batch, [299, 299], name="ResizeBilinear")
        scaled = tf.multiply(tf.subtract(resized, 128.0, name="Sub"), 1 / 128, name="Mul")
        # A strided convolution keeps the features sensitive to where pixels land.
        hidden = tf.nn.relu(tf.nn.conv2d(scaled, constant((3, 3, 3, 16), 1.0), 4, "VALID"))
        pooled = tf.reduce_mean(hidden, axis=[1, 2], keepdims=True)
        pool_3 = tf.nn.conv2d(pooled, constant((1, 1, 16, 2048), 1.0), 1, "VALID", name="pool_3")
        flat = tf.reshape(pool_3, [1, 2048], name="pool_3/_reshape")
        matmul = tf.matmul(flat, constant((2048, 1008), 0.05, "softmax/weights"),
                           name="softmax/logits/MatMul")
        logits = tf.nn.bias_add(matmul, constant((1008,), 1.0, "softmax/biases"),
                                name="softmax/logits")
        tf.nn.softmax(logits, name="softmax")
    return graph.as_graph_def()


GRAPH_DEF = _tiny_inception_graph_def()


def _ttur_reference(images: np.ndarray) -> dict[str, np.ndarray]:
    """TTUR's way: one image at a time into `ExpandDims:0` as [0, 255] pixels, in TF1."""
    graph = tf.Graph()
    with graph.as_default():
        tf.graph_util.import_graph_def(GRAPH_DEF, name="")
    fetches = ["pool_3:0", "softmax/logits:0", "softmax/logits/MatMul:0"]
    with tf.compat.v1.Session(graph=graph) as session:
        runs = [
            session.run(fetches, {"ExpandDims:0": (image[None] + 1) * 127.5}) for image in images
        ]
    pool, logits, unbiased_logits = (np.concatenate(parts) for parts in zip(*runs))
    return {
        FEATURES: pool.reshape(len(images), 2048),
        PROBS: tf.nn.softmax(logits[:, :1000]).numpy(),
        "unbiased_probs": tf.nn.softmax(unbiased_logits[:, :1000]).numpy(),
    }


@pytest.fixture(scope="module")
def graph_files(tmp_path_factory):
    """The tiny graph as a `.pb`, and packed into a `.tgz` laid out like the real download."""
    folder = tmp_path_factory.mktemp("inception")
    graph_bytes = GRAPH_DEF.SerializeToString()
    pb_path = folder / "classify_image_graph_def.pb"
    pb_path.write_bytes(graph_bytes)
    tgz_path = folder / "inception-2015-12-05.tgz"
    with tarfile.open(tgz_path, "w:gz") as archive:
        for name, data in [
            ("imagenet_synset_to_human_label_map.txt", b"n01440764\ttench\n"),
            ("classify_image_graph_def.pb", graph_bytes),
            ("LICENSE", b"Apache 2.0\n"),
        ]:
            member = tarfile.TarInfo(name)
            member.size = len(data)
            archive.addfile(member, io.BytesIO(data))
    return pb_path, tgz_path


@pytest.mark.parametrize("size, batch_size", [(32, 2), (20, 5)])
def test_graph_extractor_matches_ttur_feeding_image_by_image(graph_files, size, batch_size):
    images = random_images(5, size=size)
    extractor = inception.TTURInception(graph_files[0], batch_size=batch_size)

    outputs = extractor(images)

    reference = _ttur_reference(images)
    assert outputs[FEATURES].shape == (5, 2048) and outputs[PROBS].shape == (5, 1000)
    np.testing.assert_allclose(outputs[FEATURES], reference[FEATURES], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(outputs[PROBS], reference[PROBS], rtol=1e-4, atol=1e-7)
    assert extractor.name == "inception-2015" and extractor.has_probs


def test_graph_extractor_can_leave_out_the_logits_bias_like_the_openai_code(graph_files):
    images = random_images(3, seed=1)
    extractor = inception.TTURInception(graph_files[0], include_logits_bias=False)

    probs = extractor(images)[PROBS]

    reference = _ttur_reference(images)
    np.testing.assert_allclose(probs, reference["unbiased_probs"], rtol=1e-4, atol=1e-7)
    assert not np.allclose(probs, reference[PROBS], atol=1e-3)


def test_graph_loads_from_the_tgz_the_environment_and_the_download_cache(
    graph_files, tmp_path, monkeypatch
):
    pb_path, tgz_path = graph_files
    images = random_images(2, seed=2)
    expected = inception.TTURInception(pb_path)(images)[FEATURES]

    from_tgz = inception.TTURInception(tgz_path)
    monkeypatch.setenv(inception.INCEPTION_GRAPH_ENV, str(tgz_path))
    from_environment = inception.make_extractor("inception-2015")
    monkeypatch.delenv(inception.INCEPTION_GRAPH_ENV)
    # Where keras.utils.get_file keeps the download: found there, it is extracted, not fetched.
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "inception-2015-12-05.tgz").write_bytes(tgz_path.read_bytes())
    from_cache = inception.TTURInception(cache_dir=str(tmp_path))

    for extractor in (from_tgz, from_environment, from_cache):
        np.testing.assert_allclose(extractor(images)[FEATURES], expected, rtol=1e-6)
    assert (tmp_path / "models" / "inception-2015-12-05_extracted").is_dir()


def _sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_download_is_over_https_and_unpinned_unless_a_hash_is_given():
    assert inception.INCEPTION_2015_URL == (
        "https://download.tensorflow.org/models/image/imagenet/inception-2015-12-05.tgz")
    assert inception.INCEPTION_2015_SHA256 is None  # upstream publishes none


def test_a_pinned_sha256_is_checked_on_a_local_graph(graph_files, monkeypatch):
    _, tgz_path = graph_files
    wrong = "0" * 64
    with pytest.raises(ValueError, match=rf"{re.escape(repr(str(tgz_path)))} has sha256 "
                                         rf"{_sha256(tgz_path)}, but file_hash expects {wrong}"):
        inception.TTURInception(tgz_path, file_hash=wrong)

    monkeypatch.setenv(inception.INCEPTION_GRAPH_ENV, str(tgz_path))
    monkeypatch.setenv(inception.INCEPTION_HASH_ENV, wrong)
    with pytest.raises(ValueError, match=f"but KERAS_BSSN_INCEPTION_SHA256 expects {wrong}.*"
                                         "point KERAS_BSSN_INCEPTION_GRAPH at a copy"):
        inception.make_extractor("inception-2015")
    monkeypatch.setenv(inception.INCEPTION_HASH_ENV, _sha256(tgz_path).upper())
    assert inception.inception_graph_path() == str(tgz_path)
    with pytest.raises(ValueError, match="file_hash must be a sha256: 64 hexadecimal digits"):
        inception.inception_graph_path(tgz_path, file_hash="d41d8cd98f00b204e9800998ecf8427e")


def test_a_pinned_sha256_is_checked_on_the_download(graph_files, tmp_path, monkeypatch):
    _, tgz_path = graph_files
    # A file:// origin takes the same `keras.utils.get_file` path as the real download, offline.
    monkeypatch.setattr(inception, "INCEPTION_2015_URL", tgz_path.as_uri())
    wrong = "f" * 64
    monkeypatch.setenv(inception.INCEPTION_HASH_ENV, wrong)
    with pytest.raises(ValueError, match=rf"archive downloaded from file://\S+ does not have the "
                                         rf"sha256 KERAS_BSSN_INCEPTION_SHA256 expects {wrong}"):
        inception.inception_graph_path(cache_dir=str(tmp_path / "wrong"))

    # The argument overrides the environment; the matching archive is extracted and used.
    path = inception.inception_graph_path(file_hash=_sha256(tgz_path),
                                          cache_dir=str(tmp_path / "right"))
    assert path.endswith("classify_image_graph_def.pb")
    assert inception.read_graph_def(path) == GRAPH_DEF


def test_graph_loader_explains_wrong_files(tmp_path):
    other_graph = tf.Graph()
    with other_graph.as_default():
        tf.compat.v1.placeholder(tf.float32, [None, None, None, 3], name="ExpandDims")
    wrong_graph = tmp_path / "other.pb"
    wrong_graph.write_bytes(other_graph.as_graph_def().SerializeToString())
    not_a_graph = tmp_path / "notes.pb"
    not_a_graph.write_bytes(b"\xff\xff not a protocol buffer")
    empty_archive = tmp_path / "empty.tgz"
    with tarfile.open(empty_archive, "w:gz"):
        pass

    with pytest.raises(ValueError, match="Not the 2015-12-05 Inception graph"):
        inception.TTURInception(wrong_graph)
    with pytest.raises(ValueError, match="not a TensorFlow GraphDef"):
        inception.TTURInception(not_a_graph)
    with pytest.raises(ValueError, match="holds no classify_image_graph_def.pb"):
        inception.TTURInception(empty_archive)
    with pytest.raises(FileNotFoundError):
        inception.TTURInception(tmp_path / "missing.pb")


def test_model_extractor_resizes_to_the_model_input_and_softmaxes_its_logits():
    model = tiny_feature_model(input_size=12)
    images = random_images(7, size=8)
    extractor = inception.ModelExtractor(model, batch_size=3)

    outputs = extractor(images)

    features, logits = model(tf.image.resize(images, (12, 12)))
    np.testing.assert_allclose(outputs[FEATURES], features, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(outputs[PROBS], tf.nn.softmax(logits), rtol=1e-5, atol=1e-6)
    assert outputs[FEATURES].shape == (7, FEATURE_DIM) and outputs[PROBS].shape == (7, CLASSES)


def test_model_extractor_without_logits_gives_flattened_features_only():
    images = keras.Input((8, 8, 3))
    model = keras.Model(images, keras.layers.Conv2D(2, 8)(images))  # (B, 1, 1, 2)

    extractor = inception.ModelExtractor(model, name="conv")
    outputs = extractor(random_images(4))

    assert not extractor.has_probs and extractor.name == "conv"
    assert set(outputs) == {FEATURES} and outputs[FEATURES].shape == (4, 2)


def test_keras_model_files_load_with_a_name_that_tracks_their_content(tmp_path):
    path = tmp_path / "domain_classifier.keras"
    tiny_feature_model().save(path)

    extractor = inception.make_extractor(str(path), batch_size=4)
    tiny_feature_model().save(path)  # other weights, same file name

    assert extractor.name.startswith("domain_classifier-") and extractor.has_probs
    assert inception.ModelExtractor.from_file(path).name != extractor.name
    assert extractor(random_images(5))[FEATURES].shape == (5, FEATURE_DIM)


def test_keras_inception_v3_gives_pool_features_and_imagenet_probabilities():
    extractor = inception.KerasInceptionV3(weights=None, batch_size=2)

    outputs = extractor(random_images(3, size=32))

    assert outputs[FEATURES].shape == (3, 2048) and outputs[PROBS].shape == (3, 1000)
    np.testing.assert_allclose(outputs[PROBS].sum(axis=1), 1.0, rtol=1e-5)
    assert extractor.name == "keras-inceptionv3-untrained"


def test_make_extractor_rejects_unknown_names():
    with pytest.raises(ValueError, match="Unknown extractor 'inception-v4'"):
        inception.make_extractor("inception-v4")


def test_datasets_are_read_batched_or_not_up_to_the_number_asked():
    extractor = inception.ModelExtractor(tiny_feature_model(), batch_size=4)
    images = random_images(10)
    expected = extractor(images[:9])

    for dataset in (
        tf.data.Dataset.from_tensor_slices(images),
        tf.data.Dataset.from_tensor_slices(images).batch(3),
    ):
        outputs = inception.collect(extractor.iterate_dataset(dataset, 9))
        np.testing.assert_allclose(outputs[FEATURES], expected[FEATURES], rtol=1e-6)
    with pytest.raises(ValueError, match="only 10 images; 11 were asked for"):
        inception.collect(extractor.iterate_dataset(tf.data.Dataset.from_tensor_slices(images), 11))


def test_collect_keeps_at_most_the_rows_asked_per_key():
    batches = [{"a": np.arange(3), "b": np.arange(3), "c": np.arange(3)}] * 3

    collected = inception.collect(batches, {"a": 4, "b": 9})

    assert collected.keys() == {"a", "b"}
    np.testing.assert_array_equal(collected["a"], [0, 1, 2, 0])
    assert len(collected["b"]) == 9


def test_generated_images_give_the_same_outputs_in_order_on_two_replicas():
    strategy = two_cpu_strategy()
    with strategy.scope():
        generator = tiny_generator()
    extractor = inception.ModelExtractor(tiny_feature_model(), batch_size=4)
    latents = np.random.default_rng(0).standard_normal((11, 8)).astype(np.float32)

    def generate(z):
        return generator(z, training=False)

    distributed = inception.collect(extractor.iterate_generated(generate, latents, strategy))
    single = inception.collect(extractor.iterate_generated(generate, latents))

    assert distributed[FEATURES].shape == (11, FEATURE_DIM)
    np.testing.assert_allclose(distributed[FEATURES], single[FEATURES], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        single[FEATURES], extractor(generator(latents).numpy())[FEATURES], rtol=1e-5, atol=1e-6
    )


def test_keras_inception_v3_offline_says_where_its_weights_go(tmp_path, monkeypatch):
    # A download that fails as offline: a file:// address of nothing, under a name no cache
    # holds.
    monkeypatch.setattr(inception, "KERAS_INCEPTION_V3_URL", (tmp_path / "weights.h5").as_uri())
    with pytest.raises(inception.ExtractorError,
                       match=r"could not be downloaded .* Offline, copy weights.h5 into "
                             r"\$KERAS_HOME/models"):
        inception.make_extractor("keras-inceptionv3")
