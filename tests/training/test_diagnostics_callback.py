"""DiagnosticsCallback: what it logs, when, and that its gradient norms are D's true ones."""

import csv

import keras
import numpy as np
import tensorflow as tf

from keras_bssn import (
    BidirectionalSpectralNormalization,
    SpectralNormalization,
    StrictSpectralNormalization,
)
from training.callbacks import DiagnosticsCallback
from training.gan import GAN

LATENT_DIM = 6


def _gan() -> GAN:
    latents = keras.Input((LATENT_DIM,))
    x = keras.layers.Dense(4 * 4 * 4)(latents)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.Reshape((4, 4, 4))(keras.layers.ReLU()(x))
    x = keras.layers.Conv2DTranspose(3, 3, strides=2, padding="same", activation="tanh")(x)
    generator = keras.Model(latents, x)

    images = keras.Input((8, 8, 3))
    x = StrictSpectralNormalization(keras.layers.Conv2D(4, 3, strides=2, padding="same"),
                                    name="strict_conv")(images)
    x = keras.layers.Conv2D(4, 3, name="plain_conv")(keras.layers.LeakyReLU(0.1)(x))
    logits = SpectralNormalization(keras.layers.Dense(1), name="logits")(
        keras.layers.Flatten()(x))
    gan = GAN(generator, keras.Model(images, logits), seed=1)
    gan.compile(d_optimizer=keras.optimizers.Adam(1e-3), g_optimizer=keras.optimizers.Adam(1e-3))
    return gan


def _images(count=32):
    return np.tanh(np.random.default_rng(0).standard_normal((count, 8, 8, 3))).astype("float32")


def _fit(gan, callback, csv_path, steps_per_epoch=2, epochs=2):
    data = tf.data.Dataset.from_tensor_slices(_images()).batch(8, drop_remainder=True).repeat()
    gan.fit(data, steps_per_epoch=steps_per_epoch, epochs=epochs, verbose=0, shuffle=False,
            callbacks=[callback, keras.callbacks.CSVLogger(str(csv_path))])
    with open(csv_path) as file:
        return list(csv.DictReader(file))


EXPECTED_KEYS = [
    "diag/weight_grad/strict_conv", "diag/weight_grad/plain_conv", "diag/weight_grad/logits",
    "diag/sigma/strict_conv", "diag/sigma/logits",
    "diag/sigma_exact/strict_conv_view1", "diag/sigma_exact/strict_conv_view2",
    "diag/sigma_exact/plain_conv_view1", "diag/sigma_exact/plain_conv_view2",
    "diag/sigma_exact/logits",
    "diag/weight_std/strict_conv", "diag/weight_std/plain_conv", "diag/weight_std/logits",
    "diag/var_over_lecun/strict_conv", "diag/var_over_lecun/plain_conv",
    "diag/var_over_lecun/logits",
    *(f"diag/input_grad_{kind}_{stat}" for kind in ("real", "fake")
      for stat in ("mean", "min", "max")),
]


def test_every_key_is_logged_with_finite_values_and_to_the_summary_writer(tmp_path):
    writer = tf.summary.create_file_writer(str(tmp_path / "logs"))
    callback = DiagnosticsCallback(2, tf.data.Dataset.from_tensor_slices(_images()).batch(5),
                                   num_images=8, summary_writer=writer)
    rows = _fit(_gan(), callback, tmp_path / "metrics.csv")
    assert len(rows) == 2
    assert sorted(key for key in rows[0] if key.startswith("diag/")) == sorted(EXPECTED_KEYS)
    for row in rows:
        for key in EXPECTED_KEYS:
            assert np.isfinite(float(row[key])), key
    assert [entry["step"] for entry in callback.history] == [0, 2, 4]
    stats = callback.history[-1]
    assert (stats["diag/input_grad_fake_min"] <= stats["diag/input_grad_fake_mean"]
            <= stats["diag/input_grad_fake_max"])
    assert list((tmp_path / "logs").glob("events.out.tfevents.*"))


def test_epochs_without_a_measurement_log_nan(tmp_path):
    callback = DiagnosticsCallback(3, _images(), num_images=4)
    rows = _fit(_gan(), callback, tmp_path / "metrics.csv", steps_per_epoch=2, epochs=3)
    measured = [np.isfinite(float(row["diag/weight_grad/logits"])) for row in rows]
    assert measured == [False, True, True]  # measurements at steps 3 and 6
    assert [entry["step"] for entry in callback.history] == [0, 3, 6]


def test_gradient_norms_match_an_independent_computation_and_nothing_changes(tmp_path):
    gan = _gan()
    callback = DiagnosticsCallback(2, _images(), num_images=8, seed=5)
    _fit(gan, callback, tmp_path / "metrics.csv")
    state = [np.array(weight) for weight in gan.weights]
    values = callback.evaluate()
    for before, weight in zip(state, gan.weights):
        np.testing.assert_array_equal(before, np.array(weight))

    discriminator = gan.discriminator
    kernels = {"strict_conv": discriminator.get_layer("strict_conv").layer.kernel,
               "plain_conv": discriminator.get_layer("plain_conv").kernel,
               "logits": discriminator.get_layer("logits").layer.kernel}
    latents = np.random.default_rng(5).standard_normal((8, LATENT_DIM)).astype("float32")
    fake = gan.generator(latents, training=True)
    images = tf.concat([_images()[:8], fake], axis=0)
    with tf.GradientTape() as tape, tf.GradientTape() as input_tape:
        input_tape.watch(images)
        logits = discriminator(images, training=False)[:, 0]
        hinge = tf.nn.relu(1.0 - logits[:8]) + tf.nn.relu(1.0 + logits[8:])
        loss = tf.reduce_mean(hinge)
    gradients = tape.gradient(loss, list(kernels.values()))
    for name, gradient in zip(kernels, gradients):
        np.testing.assert_allclose(values[f"diag/weight_grad/{name}"],
                                   float(tf.norm(gradient)), rtol=1e-4)
    input_norms = tf.norm(tf.reshape(input_tape.gradient(logits, images), (16, -1)), axis=1)
    np.testing.assert_allclose(values["diag/input_grad_real_max"],
                               float(tf.reduce_max(input_norms[:8])), rtol=1e-4)
    np.testing.assert_allclose(values["diag/input_grad_fake_mean"],
                               float(tf.reduce_mean(input_norms[8:])), rtol=1e-4)


def _generator() -> keras.Model:
    latents = keras.Input((LATENT_DIM,))
    images = keras.layers.Reshape((8, 8, 3))(keras.layers.Dense(8 * 8 * 3, activation="tanh")(
        latents))
    return keras.Model(latents, images)


def _first_class_ids(images):
    return keras.ops.zeros(keras.ops.shape(images)[:1], "int32")


def _discriminator_of_every_kernel_kind() -> keras.Model:
    """Depthwise convolutions, EinsumDense with 3-axis kernels and an Embedding, wrapped or not."""
    images = keras.Input((8, 8, 3))
    x = BidirectionalSpectralNormalization(
        keras.layers.DepthwiseConv2D(3, depth_multiplier=2), name="depthwise")(images)
    x = keras.layers.DepthwiseConv2D(3, depth_multiplier=2, name="plain_depthwise")(
        keras.layers.LeakyReLU(0.1)(x))
    x = keras.layers.Flatten()(keras.layers.LeakyReLU(0.1)(x))  # 4 * 4 * 12 = 192 features
    features = keras.layers.EinsumDense("ab,bcd->acd", output_shape=(2, 3),
                                        name="plain_einsum")(x)
    logits = SpectralNormalization(keras.layers.EinsumDense("abc,bcd->ad", output_shape=(1,)),
                                   name="einsum_logits")(features)
    # A projection head (a class embedding dotted with the features), for class 0.
    class_ids = keras.layers.Lambda(_first_class_ids)(images)
    embedded = keras.layers.Embedding(3, 6, name="embedding")(class_ids)
    projection = keras.layers.Dot(axes=1)([embedded, keras.layers.Flatten()(features)])
    return keras.Model(images, keras.layers.Add()([logits, projection]))


def _top_singular_value(matrix: np.ndarray) -> float:
    return float(np.linalg.svd(np.asarray(matrix, np.float64), compute_uv=False)[0])


def test_sigmas_and_variances_follow_each_kernel_kinds_layout():
    discriminator = _discriminator_of_every_kernel_kind()
    # Converge the power iteration, so the stored estimates are the true sigmas.
    for _ in range(300):
        discriminator(_images(2), training=True)
    gan = GAN(_generator(), discriminator, seed=1)
    gan.compile(d_optimizer=keras.optimizers.Adam(1e-3), g_optimizer=keras.optimizers.Adam(1e-3))
    callback = DiagnosticsCallback(1, _images(), num_images=4)
    callback.set_model(gan)

    values = callback.evaluate()

    depthwise = np.array(discriminator.get_layer("depthwise").layer.kernel)  # (3, 3, 3, 2)
    plain_depthwise = np.array(discriminator.get_layer("plain_depthwise").kernel)  # (3,3,6,2)
    plain_einsum = np.array(discriminator.get_layer("plain_einsum").kernel)  # (192, 2, 3)
    einsum_logits = np.array(discriminator.get_layer("einsum_logits").layer.kernel)  # (2,3,1)
    embedding = np.array(discriminator.get_layer("embedding").embeddings)  # (3, 6)
    # The matrix views, written out: a depthwise kernel is (*spatial, in, multiplier), view 2
    # swapping in and multiplier; an EinsumDense kernel's rows are its contracted axes.
    expected = {
        "depthwise_view1": depthwise.reshape(27, 2),
        "depthwise_view2": depthwise.transpose(0, 1, 3, 2).reshape(18, 3),
        "plain_depthwise_view1": plain_depthwise.reshape(54, 2),
        "plain_depthwise_view2": plain_depthwise.transpose(0, 1, 3, 2).reshape(18, 6),
        "plain_einsum": plain_einsum.reshape(192, 6),
        "einsum_logits": einsum_logits.reshape(6, 1),
        "embedding": embedding,
    }
    for name, view in expected.items():
        np.testing.assert_allclose(values[f"diag/sigma_exact/{name}"], _top_singular_value(view),
                                   rtol=1e-6, err_msg=name)
    # What the wrappers divide by: converged, the estimates are those same sigmas.
    for name in ("depthwise_view1", "depthwise_view2", "einsum_logits"):
        np.testing.assert_allclose(values[f"diag/sigma/{name}"],
                                   values[f"diag/sigma_exact/{name}"], rtol=1e-3, err_msg=name)
    # fan_in is view 1's rows: 192 for the EinsumDense (not 192 * 2), the vocabulary for the
    # Embedding; the wrapped layers' variance is that of scale * W / sigma.
    np.testing.assert_allclose(values["diag/var_over_lecun/plain_einsum"],
                               np.var(plain_einsum) * 192, rtol=1e-5)
    np.testing.assert_allclose(values["diag/var_over_lecun/embedding"],
                               np.var(embedding) * 3, rtol=1e-5)
    bsn_kernel = depthwise / np.mean([values["diag/sigma/depthwise_view1"],
                                      values["diag/sigma/depthwise_view2"]])
    np.testing.assert_allclose(values["diag/weight_std/depthwise"], np.std(bsn_kernel),
                               rtol=1e-4)
    for name in ("depthwise", "plain_depthwise", "plain_einsum", "einsum_logits", "embedding"):
        assert np.isfinite(values[f"diag/weight_grad/{name}"]) and (
            values[f"diag/weight_grad/{name}"] > 0), name


def test_under_explicit_vector_updates_the_gradients_are_those_training_follows(tmp_path):
    # The official code differentiates through a look-ahead power iteration from the stored u.
    official = {"differentiable_power_iteration": True, "vector_updates": "explicit"}
    images = keras.Input((8, 8, 3))
    x = BidirectionalSpectralNormalization(keras.layers.Conv2D(4, 3, strides=2), scale=1.2,
                                           name="conv", **official)(images)
    logits = SpectralNormalization(keras.layers.Dense(1), name="logits", **official)(
        keras.layers.Flatten()(keras.layers.LeakyReLU(0.1)(x)))
    gan = GAN(_gan().generator, keras.Model(images, logits), seed=1)
    gan.compile(d_optimizer=keras.optimizers.Adam(1e-3), g_optimizer=keras.optimizers.Adam(1e-3))
    vectors = [np.array(weight) for weight in gan.discriminator.non_trainable_weights]
    callback = DiagnosticsCallback(2, _images(), num_images=8, seed=5)
    callback.set_model(gan)
    values = callback.evaluate()
    for before, weight in zip(vectors, gan.discriminator.non_trainable_weights):
        np.testing.assert_array_equal(before, np.array(weight))  # u is not advanced

    latents = np.random.default_rng(5).standard_normal((8, LATENT_DIM)).astype("float32")
    fake = gan.generator(latents, training=True)
    batch = tf.concat([_images()[:8], fake], axis=0)
    kernel = gan.discriminator.get_layer("conv").layer.kernel

    def gradient_norm(training):
        with tf.GradientTape() as tape:
            out = gan.discriminator(batch, training=training)[:, 0]
            loss = tf.reduce_mean(tf.nn.relu(1.0 - out[:8]) + tf.nn.relu(1.0 + out[8:]))
        return float(tf.norm(tape.gradient(loss, kernel)))

    np.testing.assert_allclose(values["diag/weight_grad/conv"], gradient_norm(True), rtol=1e-4)
    assert abs(gradient_norm(False) - gradient_norm(True)) > 1e-3 * gradient_norm(True)
