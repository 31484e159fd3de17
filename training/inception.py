"""Feature extractors for FID, IS and KID: images in [-1, 1] in, features and probabilities out.

Every extractor is a `FeatureExtractor`: `extractor(images)` returns a dict with

* `"features"`: float32 `(N, d)` vectors whose statistics FID and KID compare, and
* `"probs"`: float32 `(N, classes)` class probabilities for the Inception Score, when the
  extractor has a classifier head (`extractor.has_probs`).

Images are float `(N, H, W, C)` in [-1, 1], any size; each extractor resizes as its network
expects and processes them `batch_size` at a time.

* `TTURInception` (the default, "inception-2015"): the Inception network of TensorFlow's
  2015-12-05 frozen graph, fed the way TTUR feeds it. This is the network of the published
  FIDs (TTUR, TF-GAN, the BSN reference code); only its numbers are comparable with papers.
* `KerasInceptionV3` ("keras-inceptionv3"): `keras.applications.InceptionV3`. Different
  weights and preprocessing: its FIDs are NOT comparable with published ones.
* `ModelExtractor`: any Keras model, e.g. a classifier of the user's own domain.

`make_extractor(name_or_path)` builds one from a name or a file path.
"""

from __future__ import annotations

import hashlib
import os
import pathlib
import tarfile
from collections.abc import Callable, Iterable, Iterator

import keras
import numpy as np
import tensorflow as tf
from google.protobuf.message import DecodeError

from training.errors import DataError, UserError
from training.protocol import DEFAULT_BATCH_SIZE, INCEPTION_2015_NAME, KERAS_INCEPTION_V3_NAME

FEATURES = "features"
PROBS = "probs"

INCEPTION_2015_URL = (
    "https://download.tensorflow.org/models/image/imagenet/inception-2015-12-05.tgz"
)
# The download is NOT pinned by default: TensorFlow publishes no checksum of this archive, and
# the reference code (TTUR, TF-GAN, BSN) downloads it unchecked. HTTPS authenticates the host,
# not the file. To pin it, give the sha256 of a copy you have vetted as `file_hash=` or in
# KERAS_BSSN_INCEPTION_SHA256 (or point KERAS_BSSN_INCEPTION_GRAPH at that copy).
INCEPTION_2015_SHA256: str | None = None
INCEPTION_HASH_ENV = "KERAS_BSSN_INCEPTION_SHA256"
INCEPTION_2015_GRAPH_FILE = "classify_image_graph_def.pb"
INCEPTION_GRAPH_ENV = "KERAS_BSSN_INCEPTION_GRAPH"
# The weights `keras.applications.InceptionV3(weights="imagenet")` fetches, with the name,
# folder and md5 it fetches them under: either finds the other's download in the cache.
KERAS_INCEPTION_V3_URL = ("https://storage.googleapis.com/tensorflow/keras-applications/"
                          "inception_v3/inception_v3_weights_tf_dim_ordering_tf_kernels.h5")
_KERAS_INCEPTION_V3_MD5 = "9a0d58056eeedaa3f26cb7ebd46da564"

# Tensor and op names in classify_image_graph_def.pb. The graph decodes a JPEG, casts it to
# float, adds a batch axis (`ExpandDims`), resizes bilinearly to 299x299 and maps [0, 255] to
# [-1, 1] (`Sub`, `Mul`). Like TTUR, pixels are fed at `ExpandDims:0`, so the graph's own
# resize and scaling apply.
_INPUT_TENSOR = "ExpandDims:0"
_POOL_TENSOR = "pool_3:0"
_LOGITS_MATMUL_OP = "softmax/logits/MatMul"
_LOGITS_BIAS_ADD_OP = "softmax/logits"
# The graph's classifier has 1008 outputs; the first 1000 are the ImageNet classes.
_IMAGENET_CLASSES = 1000

ImageBatches = Iterable[np.ndarray | tf.Tensor]


class FeatureExtractor:
    """Base class: maps images in [-1, 1] to features (and class probabilities).

    Subclasses implement `_extract(images)` with TensorFlow ops on a float32 batch;
    this class batches, compiles and converts to NumPy.

    Attributes:
        name: identifies the network (and its weights) in statistics cache keys.
        has_probs: whether outputs include `"probs"`, so the Inception Score can be computed.
        batch_size: images per forward pass.
    """

    def __init__(self, name: str, has_probs: bool, batch_size: int = DEFAULT_BATCH_SIZE):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1; got {batch_size}.")
        self.name = name
        self.has_probs = has_probs
        self.batch_size = batch_size
        # One trace serves every batch size and image size.
        self._compiled = tf.function(
            self.extract_batch,
            input_signature=[tf.TensorSpec([None, None, None, None], tf.float32)],
        )
        self._generated_steps: dict[tuple, Callable[[tf.Tensor], dict[str, tf.Tensor]]] = {}

    @property
    def feature_size(self) -> int:
        """d, the length of each feature vector (those of one blank 32x32 image)."""
        return int(self(np.zeros((1, 32, 32, 3), np.float32))[FEATURES].shape[-1])

    def extract_batch(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
        """The outputs for one batch, as TensorFlow ops (traceable inside `tf.function`)."""
        return self._extract(tf.cast(images, tf.float32))

    def _extract(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
        raise NotImplementedError

    def __call__(self, images: np.ndarray | tf.Tensor) -> dict[str, np.ndarray]:
        """The outputs for `images`, `(N, H, W, C)` in [-1, 1], processed in batches."""
        starts = range(0, int(images.shape[0]), self.batch_size)
        return collect(self.iterate(images[start : start + self.batch_size] for start in starts))

    def iterate(self, batches: ImageBatches) -> Iterator[dict[str, np.ndarray]]:
        """The outputs of each batch in `batches`, one dict per batch."""
        for batch in batches:
            yield _to_numpy(self._compiled(tf.convert_to_tensor(batch, tf.float32)))

    def iterate_dataset(
        self, dataset: tf.data.Dataset, num_images: int
    ) -> Iterator[dict[str, np.ndarray]]:
        """The outputs for the first `num_images` images of `dataset`, batch by batch.

        Args:
            dataset: images `(H, W, C)` in [-1, 1], or batches of them `(B, H, W, C)`.
            num_images: how many images to use.

        Raises:
            ValueError: after the last batch, if `dataset` held fewer than `num_images` images.
        """
        if dataset.element_spec.shape.rank == 4:
            dataset = dataset.unbatch()
        seen = 0
        for batch in self.iterate(dataset.take(num_images).batch(self.batch_size)):
            seen += len(batch[FEATURES])
            yield batch
        if seen < num_images:
            raise DataError(f"The data set has only {seen} images; {num_images} were asked "
                            "for. Lower --num (or --num-real).")

    def iterate_generated(
        self,
        generate: Callable[[tf.Tensor], tf.Tensor],
        latents: np.ndarray,
        strategy: tf.distribute.Strategy | None = None,
    ) -> Iterator[dict[str, np.ndarray]]:
        """The outputs for `generate(latents)`, generated and extracted batch by batch.

        Generation and extraction run in one compiled step, so images never leave the device.

        Args:
            generate: maps a float32 batch of latents to images in [-1, 1] (e.g. a generator
                called with `training=False`).
            latents: float32 `(N, latent_dim)`.
            strategy: with several replicas on this machine, each batch is split across them
                with `strategy.run`. Replicas on other machines are not used: each worker
                then generates every image itself, and all compute the same scores.
        """
        if strategy is not None and not _replicas_all_here(strategy):
            strategy = None
        step = self._generated_step(generate, strategy)
        dataset = tf.data.Dataset.from_tensor_slices(latents).batch(self.batch_size)
        if strategy is None:
            for z in dataset:
                yield _to_numpy(step(z))
            return
        local_results = strategy.experimental_local_results
        for z in strategy.experimental_distribute_dataset(dataset):
            per_replica = step(z)
            # Each replica got the next contiguous slice of the batch: concatenating the
            # local results restores the order. (No `strategy.gather`: its collectives clash
            # between strategies in one process.)
            yield {
                key: np.concatenate([part.numpy() for part in local_results(values)])
                for key, values in per_replica.items()
            }

    def _generated_step(
        self, generate: Callable[[tf.Tensor], tf.Tensor], strategy: tf.distribute.Strategy | None
    ) -> Callable[[tf.Tensor], dict[str, tf.Tensor]]:
        """The compiled generate-and-extract step, built once per `generate` and `strategy`:
        a new `tf.function` for every evaluation would be traced anew every time."""
        key = (generate, strategy)
        if key not in self._generated_steps:

            def generate_and_extract(latents: tf.Tensor) -> dict[str, tf.Tensor]:
                return self.extract_batch(generate(latents))

            if strategy is None:
                step = tf.function(generate_and_extract, reduce_retracing=True)
            else:
                step = tf.function(lambda z: strategy.run(generate_and_extract, args=(z,)))
            self._generated_steps[key] = step
        return self._generated_steps[key]


def _replicas_all_here(strategy: tf.distribute.Strategy) -> bool:
    """Whether `strategy` has several replicas, all on this machine."""
    return 1 < strategy.num_replicas_in_sync == len(strategy.extended.worker_devices)


def collect(
    batches: Iterable[dict[str, np.ndarray]], limits: dict[str, int] | None = None
) -> dict[str, np.ndarray]:
    """Concatenate per-batch outputs, keeping at most `limits[key]` rows of each listed key.

    With `limits`, only the listed keys are kept, so e.g. 50,000 class probabilities for the
    Inception Score can be gathered without also holding 50,000 feature vectors.
    """
    kept: dict[str, list[np.ndarray]] = {}
    for batch in batches:
        for key, values in batch.items():
            if limits is not None:
                room = limits.get(key, 0) - sum(len(part) for part in kept.get(key, []))
                values = values[: max(room, 0)]
            if len(values):
                kept.setdefault(key, []).append(values)
    return {key: np.concatenate(values) for key, values in kept.items()}


def _to_numpy(outputs: dict[str, tf.Tensor]) -> dict[str, np.ndarray]:
    return {key: value.numpy() for key, value in outputs.items()}


class TTURInception(FeatureExtractor):
    """The Inception network of TensorFlow's 2015-12-05 graph, as used for published FIDs.

    The frozen graph `classify_image_graph_def.pb` comes from `inception-2015-12-05.tgz`:
    a local `.tgz` or `.pb` given as `graph_path` or in the environment variable
    `KERAS_BSSN_INCEPTION_GRAPH`, else downloaded once into the Keras cache over HTTPS. The
    download is unpinned unless a sha256 is given (`file_hash`, or the environment variable
    `KERAS_BSSN_INCEPTION_SHA256`): upstream publishes none. See `inception_graph_path`.

    Images in [-1, 1] are mapped to [0, 255] and fed, any size, where TTUR feeds them
    (`ExpandDims:0`): the graph's bilinear resize to 299x299 and its scaling to [-1, 1] then
    apply. Features are `pool_3` (2048); probabilities are the softmax over the first 1000
    of the 1008 logits. The graph's own `softmax` output cannot be used for batches: it
    reshapes `pool_3` to a hard-coded `[1, 2048]`. So the graph is imported with the input
    remapped to a batch of any size, pruned to `pool_3` and the classifier's weights, and
    the logits are computed from those.

    Args:
        graph_path: the `.tgz` archive or the `.pb` graph; default: the environment variable,
            else the download.
        batch_size: images per forward pass.
        include_logits_bias: add the classifier's bias to the logits, as the graph's
            `softmax/logits` does (and TF-GAN). The original OpenAI Inception Score code
            leaves it out, which lowers scores a little; pass False to reproduce it.
        file_hash: the sha256 the graph file must have (the downloaded archive, or the local
            file); default: `KERAS_BSSN_INCEPTION_SHA256`, else unchecked.
        cache_dir: Keras cache folder for the download (default `~/.keras`).
    """

    def __init__(
        self,
        graph_path: str | os.PathLike | None = None,
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        include_logits_bias: bool = True,
        file_hash: str | None = None,
        cache_dir: str | None = None,
    ):
        super().__init__(INCEPTION_2015_NAME, has_probs=True, batch_size=batch_size)
        self.include_logits_bias = include_logits_bias
        path = inception_graph_path(graph_path, file_hash=file_hash, cache_dir=cache_dir)
        self._graph = _import_inception_graph(read_graph_def(path))

    def _extract(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
        pixels = tf.ensure_shape((images + 1.0) * 127.5, [None, None, None, 3])
        pool, weights, biases = self._graph(pixels)
        features = tf.reshape(pool, [-1, weights.shape[0]])
        logits = tf.matmul(features, weights)
        if self.include_logits_bias:
            logits += biases
        return {FEATURES: features, PROBS: tf.nn.softmax(logits[:, :_IMAGENET_CLASSES])}


class ExtractorError(UserError, ValueError):
    """A feature extractor cannot be found, downloaded or read."""


def inception_graph_path(
    graph_path: str | os.PathLike | None = None,
    file_hash: str | None = None,
    cache_dir: str | None = None,
) -> str:
    """Where the 2015-12-05 Inception graph is: `graph_path`, the environment variable
    `KERAS_BSSN_INCEPTION_GRAPH`, or the extracted download (fetched over HTTPS with
    `keras.utils.get_file` on first use, into `cache_dir`/models).

    Pinning: no hash of the archive is published upstream, so nothing is checked unless a
    sha256 is given, as `file_hash` or in `KERAS_BSSN_INCEPTION_SHA256`. It pins whichever
    file is used: the download (`keras.utils.get_file(file_hash=...)`, which also
    re-downloads a cached archive that does not match), or the local `.tgz`/`.pb`.

    Raises:
        ValueError: the hash is not a sha256, or the file does not have it.
    """
    source = "file_hash"
    if not file_hash and os.environ.get(INCEPTION_HASH_ENV):
        file_hash, source = os.environ[INCEPTION_HASH_ENV], INCEPTION_HASH_ENV
    file_hash = (file_hash or INCEPTION_2015_SHA256 or "").strip().lower() or None
    if file_hash is not None and not _is_sha256(file_hash):
        raise ExtractorError(f"{source} must be a sha256: 64 hexadecimal digits; got "
                             f"{file_hash!r}.")
    chosen = graph_path or os.environ.get(INCEPTION_GRAPH_ENV)
    if chosen:
        if file_hash is not None and os.path.isfile(chosen):
            actual = hashlib.sha256(pathlib.Path(chosen).read_bytes()).hexdigest()
            if actual != file_hash:
                raise ExtractorError(_hash_mismatch(repr(os.fspath(chosen)), actual, file_hash,
                                                source))
        return os.fspath(chosen)
    try:
        extracted = keras.utils.get_file(
            fname=os.path.basename(INCEPTION_2015_URL),
            origin=INCEPTION_2015_URL,
            file_hash=file_hash,
            hash_algorithm="sha256",
            extract=True,
            cache_subdir="models",
            cache_dir=cache_dir,
        )
    except ValueError as error:
        if file_hash is None or "hash" not in str(error):
            raise
        raise ExtractorError(_hash_mismatch(f"The archive downloaded from {INCEPTION_2015_URL}",
                                        None, file_hash, source)) from error
    except Exception as error:  # get_file raises a bare Exception when the fetch fails
        raise _download_failure("The Inception graph", INCEPTION_2015_URL, error,
                                "give a copy of inception-2015-12-05.tgz (or its .pb) with "
                                f"--extractor PATH or {INCEPTION_GRAPH_ENV}=PATH, or use a "
                                ".keras feature model") from None
    return os.path.join(extracted, INCEPTION_2015_GRAPH_FILE)


def _download_failure(what: str, url: str, error: Exception, offline_fix: str) -> ExtractorError:
    return ExtractorError(f"{what} could not be downloaded from {url} ({error}). Offline, "
                          f"{offline_fix}.")


def _is_sha256(value: str) -> bool:
    return len(value) == 64 and all(char in "0123456789abcdef" for char in value)


def _hash_mismatch(what: str, actual: str | None, expected: str, source: str) -> str:
    found = f"has sha256 {actual}, but" if actual else "does not have the sha256"
    return (f"{what} {found} {source} expects {expected}: it is not the pinned Inception "
            "graph. Upstream publishes no hash, so check the one you gave, or point "
            f"{INCEPTION_GRAPH_ENV} at a copy you have vetted.")


def read_graph_def(path: str | os.PathLike) -> tf.compat.v1.GraphDef:
    """The GraphDef in a `.pb` file, or in `classify_image_graph_def.pb` inside a `.tgz`."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No Inception graph at {path!r}.")
    if tarfile.is_tarfile(path):
        with tarfile.open(path) as archive:
            try:
                data = archive.extractfile(INCEPTION_2015_GRAPH_FILE).read()
            except KeyError as error:
                raise ValueError(f"{path!r} holds no {INCEPTION_2015_GRAPH_FILE}.") from error
    else:
        data = pathlib.Path(path).read_bytes()
    graph_def = tf.compat.v1.GraphDef()
    try:
        graph_def.ParseFromString(data)
    except DecodeError as error:
        raise ValueError(f"{path!r} is not a TensorFlow GraphDef.") from error
    return graph_def


def _import_inception_graph(
    graph_def: tf.compat.v1.GraphDef,
) -> Callable[[tf.Tensor], tuple[tf.Tensor, tf.Tensor, tf.Tensor]]:
    """A TF2 function `pixels (N, H, W, 3) in [0, 255] -> (pool_3, weights, biases)`."""

    def import_graph(pixels: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        try:
            pool, matmul, bias_add = tf.graph_util.import_graph_def(
                graph_def,
                input_map={_INPUT_TENSOR: pixels},
                return_elements=[_POOL_TENSOR, _LOGITS_MATMUL_OP, _LOGITS_BIAS_ADD_OP],
                name="inception",
            )
        except ValueError as error:
            raise ValueError(
                f"Not the 2015-12-05 Inception graph (needs {_INPUT_TENSOR}, {_POOL_TENSOR}, "
                f"{_LOGITS_MATMUL_OP}, {_LOGITS_BIAS_ADD_OP}): {error}"
            ) from error
        return pool, matmul.inputs[1], bias_add.inputs[1]

    wrapped = tf.compat.v1.wrap_function(
        import_graph, [tf.TensorSpec([None, None, None, 3], tf.float32)]
    )
    _check_classifier_shapes(*wrapped.outputs)
    # Pruning keeps only what the three outputs need: not the JPEG decoder the remapped input
    # replaced, nor the batch-size-1 `pool_3/_reshape`, which would fail inside `tf.function`.
    return wrapped.prune(wrapped.inputs[0], wrapped.outputs)


def _check_classifier_shapes(pool: tf.Tensor, weights: tf.Tensor, biases: tf.Tensor) -> None:
    features = pool.shape[-1]
    rows, classes = weights.shape if weights.shape.rank == 2 else (None, 0)
    if rows != features or classes < _IMAGENET_CLASSES:
        raise ValueError(
            f"Unexpected Inception graph: pool_3 has {features} features but the classifier "
            f"weights have shape {weights.shape} (expected ({features}, >= {_IMAGENET_CLASSES}))."
        )
    if biases.shape != weights.shape[1:]:
        raise ValueError(f"Classifier biases {biases.shape} do not match weights {weights.shape}.")


class ModelExtractor(FeatureExtractor):
    """Any Keras model as feature extractor, e.g. a classifier of the user's own domain.

    The model takes images in [-1, 1]; if its input has a fixed height and width, images
    are first resized to them (bilinear). It returns either the features, or a pair
    `[features, logits]`, in which case the softmax of the logits gives `"probs"` for the
    Inception Score. Features of any shape are flattened.

    Args:
        model: the Keras model.
        name: its name in statistics cache keys (default: `model.name`). Give a name that
            changes when the weights do, or stale cached statistics will be used.
        has_logits: whether the model returns `[features, logits]`; default: it does if it
            declares two outputs.
        batch_size: images per forward pass.
    """

    def __init__(
        self,
        model: keras.Model,
        name: str | None = None,
        has_logits: bool | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
    ):
        if has_logits is None:
            has_logits = len(_declared_outputs(model)) == 2
        super().__init__(name or model.name, has_probs=has_logits, batch_size=batch_size)
        self.model = model
        self._image_size = _fixed_image_size(model)

    @classmethod
    def from_file(
        cls, path: str | os.PathLike, batch_size: int = DEFAULT_BATCH_SIZE
    ) -> ModelExtractor:
        """Load a `.keras` model; its cache name is its file name plus a digest of the file."""
        model = keras.saving.load_model(path, compile=False)
        digest = hashlib.sha256(pathlib.Path(path).read_bytes()).hexdigest()[:12]
        return cls(model, name=f"{pathlib.Path(path).stem}-{digest}", batch_size=batch_size)

    def _extract(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
        if self._image_size is not None:
            images = tf.image.resize(images, self._image_size, method="bilinear")
        outputs = self.model(images, training=False)
        features = outputs[0] if self.has_probs else outputs
        result = {FEATURES: tf.cast(tf.reshape(features, [tf.shape(features)[0], -1]), tf.float32)}
        if self.has_probs:
            result[PROBS] = tf.nn.softmax(tf.cast(outputs[1], tf.float32))
        return result


def _declared_outputs(model: keras.Model) -> list:
    try:
        return list(model.outputs)
    except (AttributeError, ValueError):  # a subclassed model declares none
        return []


def _fixed_image_size(model: keras.Model) -> tuple[int, int] | None:
    try:
        height, width = model.input_shape[1:3]
    except (AttributeError, ValueError):
        return None
    return (height, width) if height is not None and width is not None else None


class KerasInceptionV3(ModelExtractor):
    """`keras.applications.InceptionV3`: pool features (2048) and ImageNet probabilities.

    Convenient where the 2015 graph is unavailable, but its weights and preprocessing differ
    from the network of published FIDs: compare its numbers only with each other.

    Args:
        weights: "imagenet" (downloaded by Keras), a weights file, or None (random; tests).
        batch_size: images per forward pass.
    """

    def __init__(self, weights: str | None = "imagenet", batch_size: int = DEFAULT_BATCH_SIZE):
        network = keras.applications.InceptionV3(
            weights=_keras_inception_weights() if weights == "imagenet" else weights,
            include_top=True, classifier_activation=None
        )
        model = keras.Model(network.inputs, [network.get_layer("avg_pool").output, network.output])
        super().__init__(model, name=_keras_inception_name(weights), batch_size=batch_size)


def _keras_inception_weights() -> str:
    """The ImageNet weights of `keras.applications.InceptionV3`: fetched on first use into
    Keras's cache (`$KERAS_HOME/models`), as Keras does, but with an error that says what to
    do offline.

    Raises:
        ExtractorError: they are not in the cache and cannot be downloaded.
    """
    try:
        return keras.utils.get_file(os.path.basename(KERAS_INCEPTION_V3_URL),
                                    KERAS_INCEPTION_V3_URL, file_hash=_KERAS_INCEPTION_V3_MD5,
                                    cache_subdir="models")
    except Exception as error:  # get_file raises a bare Exception when the fetch fails
        raise _download_failure(
            "The Keras InceptionV3 weights", KERAS_INCEPTION_V3_URL, error,
            f"copy {os.path.basename(KERAS_INCEPTION_V3_URL)} into $KERAS_HOME/models "
            f"(default ~/.keras/models), or use --extractor {INCEPTION_2015_NAME} with a "
            "local copy of its graph, or a .keras feature model") from None


def _keras_inception_name(weights: str | None) -> str:
    if weights == "imagenet":
        return KERAS_INCEPTION_V3_NAME
    return f"{KERAS_INCEPTION_V3_NAME}-{pathlib.Path(weights).stem if weights else 'untrained'}"


def make_extractor(
    name_or_path: str = INCEPTION_2015_NAME, batch_size: int = DEFAULT_BATCH_SIZE
) -> FeatureExtractor:
    """An extractor by name or file.

    Args:
        name_or_path: "inception-2015" (default, comparable with published FIDs),
            "keras-inceptionv3", a `.keras` model file (see `ModelExtractor`), or a
            `.pb` / `.tgz` copy of the 2015-12-05 Inception graph.
        batch_size: images per forward pass.

    Raises:
        ExtractorError: the name is unknown, or its file cannot be found, fetched or read.
    """
    if name_or_path == KERAS_INCEPTION_V3_NAME:
        return KerasInceptionV3(batch_size=batch_size)
    is_file = name_or_path.endswith((".keras", ".pb", ".tgz", ".tar.gz"))
    if not is_file and name_or_path != INCEPTION_2015_NAME:
        raise ExtractorError(
            f"Unknown extractor {name_or_path!r}: use {INCEPTION_2015_NAME!r}, "
            f"{KERAS_INCEPTION_V3_NAME!r}, a .keras model or a .pb/.tgz Inception graph.")
    if is_file and not os.path.isfile(name_or_path):
        raise ExtractorError(f"--extractor {name_or_path}: no such file.")
    try:
        if name_or_path.endswith(".keras"):
            return ModelExtractor.from_file(name_or_path, batch_size=batch_size)
        return TTURInception(name_or_path if is_file else None, batch_size=batch_size)
    except ExtractorError:
        raise
    except (OSError, ValueError, tarfile.TarError, DecodeError) as error:
        raise ExtractorError(f"--extractor {name_or_path} cannot be read as a feature "
                             f"extractor ({error}).") from None
