"""The GAN model: its train step, power-iteration bookkeeping, strategies, EMA, saving."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_bssn import BidirectionalSpectralNormalization, SpectralNormalization, spectral
from training.gan import GAN
from tests.strategies import two_cpu_strategy

LATENT_DIM = 8


def _generator() -> keras.Model:
    latents = keras.Input((LATENT_DIM,))
    x = keras.layers.Dense(4 * 4 * 8)(latents)
    x = keras.layers.BatchNormalization(synchronized=True)(x)
    x = keras.layers.ReLU()(keras.layers.Reshape((4, 4, 8))(x))
    x = keras.layers.Conv2DTranspose(3, 4, strides=2, padding="same")(x)
    return keras.Model(latents, keras.layers.Activation("tanh")(x), name="generator")


def _discriminator() -> keras.Model:
    images = keras.Input((8, 8, 3))
    x = BidirectionalSpectralNormalization(keras.layers.Conv2D(8, 3, strides=2), scale=1.2,
                                           name="conv")(images)
    x = keras.layers.Flatten()(keras.layers.LeakyReLU(0.1)(x))
    logits = SpectralNormalization(keras.layers.Dense(1), scale=1.2, name="logits")(x)
    return keras.Model(images, logits, name="discriminator")


def _gan(n_dis=1, ema_decay=None, **compile_kwargs) -> GAN:
    gan = GAN(_generator(), _discriminator(), ema_decay=ema_decay, seed=3)
    gan.compile(d_optimizer=keras.optimizers.Adam(1e-3, 0.5, 0.999),
                g_optimizer=keras.optimizers.Adam(1e-3, 0.5, 0.999), n_dis=n_dis,
                **compile_kwargs)
    return gan


def _real_images(count, seed=0):
    return np.tanh(np.random.default_rng(seed).standard_normal((count, 8, 8, 3))).astype(
        "float32")


def _dataset(batch, steps, seed=0):
    # Repeated and cut into full batches, as the training pipeline does.
    images = _real_images(batch * steps, seed)
    return tf.data.Dataset.from_tensor_slices(images).batch(batch, drop_remainder=True).repeat()


def _fit(gan, batch, steps, seed=0):
    return gan.fit(_dataset(batch, steps, seed), steps_per_epoch=steps, epochs=1, verbose=0)


def test_train_step_reports_the_reference_metrics():
    gan = _gan()
    history = _fit(gan, 8, 3)
    logs = {key: values[-1] for key, values in history.history.items()}
    for key in ("d_loss", "d_loss_real", "d_loss_fake", "g_loss", "d_real", "d_fake",
                "grad_norm_real", "grad_norm_fake", "sigma/conv_view1", "sigma/conv_view2",
                "sigma/logits"):
        assert key in logs and np.isfinite(logs[key]), key
    np.testing.assert_allclose(logs["d_loss"], logs["d_loss_real"] + logs["d_loss_fake"],
                               rtol=1e-5)
    assert int(gan.g_optimizer.iterations) == 3 and int(gan.d_optimizer.iterations) == 3


def test_each_discriminator_update_advances_u_once_and_the_generator_update_never(
        monkeypatch):
    calls = []
    original = spectral.power_iteration
    monkeypatch.setattr(spectral, "power_iteration",
                        lambda *args, **kwargs: calls.append(1) or original(*args, **kwargs))
    gan = _gan(n_dis=3, run_eagerly=True)
    _fit(gan, 8 * 3, 1)
    views = 2 + 1  # the conv's two BSN views and the dense layer's one
    assert len(calls) == 3 * views
    assert int(gan.d_optimizer.iterations) == 3 and int(gan.g_optimizer.iterations) == 1


def _train(strategy, initial, steps=3, global_batch=8):
    with strategy.scope():
        gan = _gan()
        gan.generator.set_weights(initial[0])
        gan.discriminator.set_weights(initial[1])
    _fit(gan, global_batch, steps)
    return gan


def test_two_replicas_train_like_one_device_with_the_same_global_batch():
    reference = _gan()
    initial = (reference.generator.get_weights(), reference.discriminator.get_weights())
    single = _train(tf.distribute.OneDeviceStrategy("/cpu:0"), initial)
    mirrored = _train(two_cpu_strategy(), initial)
    for model in ("generator", "discriminator"):
        for one, two in zip(getattr(single, model).get_weights(),
                            getattr(mirrored, model).get_weights()):
            np.testing.assert_allclose(one, two, rtol=2e-4, atol=2e-5)
    moved = [not np.allclose(a, b) for a, b in zip(initial[0], single.generator.get_weights())]
    assert all(moved)


def test_ema_tracks_the_generator_weights():
    gan = _gan(ema_decay=0.9)
    before = [w.numpy() for w in gan.generator.trainable_weights]
    _fit(gan, 8, 1)
    after = [w.numpy() for w in gan.generator.trainable_weights]
    averaged = [w.numpy() for w in gan.sampling_generator.trainable_weights]
    for old, new, average in zip(before, after, averaged):
        np.testing.assert_allclose(average, 0.9 * old + 0.1 * new, rtol=1e-5, atol=1e-7)
    assert gan.sampling_generator is gan.ema_generator
    assert _gan().sampling_generator is not None


def test_gradient_penalty_is_reported_and_changes_the_update():
    initial = _gan()
    weights = (initial.generator.get_weights(), initial.discriminator.get_weights())
    results = []
    for penalty in (0.0, 10.0):
        gan = _gan(loss="wasserstein", gradient_penalty=penalty)
        gan.generator.set_weights(weights[0])
        gan.discriminator.set_weights(weights[1])
        history = _fit(gan, 8, 2)
        results.append(gan.discriminator.get_weights())
    assert "gradient_penalty" in history.history
    assert history.history["gradient_penalty"][-1] > 0
    assert not np.allclose(results[0][1], results[1][1])


def test_keras_file_round_trip_keeps_generator_and_vectors(tmp_path):
    gan = _gan(ema_decay=0.99)
    _fit(gan, 8, 2)
    path = tmp_path / "gan.keras"
    gan.save(path)
    restored = keras.saving.load_model(path, compile=False)
    latents = np.random.default_rng(1).standard_normal((4, LATENT_DIM)).astype("float32")
    np.testing.assert_allclose(gan.generator.predict(latents, verbose=0),
                               restored.generator.predict(latents, verbose=0), rtol=1e-6)
    for original, loaded in zip(gan.discriminator.non_trainable_weights,
                                restored.discriminator.non_trainable_weights):
        np.testing.assert_array_equal(original.numpy(), loaded.numpy())
    np.testing.assert_allclose(gan.sampling_generator.predict(latents, verbose=0),
                               restored.sampling_generator.predict(latents, verbose=0),
                               rtol=1e-6)


@pytest.mark.parametrize("kwargs, message", [
    ({"n_dis": 0}, "n_dis"),
    ({"loss": "lsgan"}, "Unknown GAN loss"),
    ({"gradient_penalty": -1.0}, "gradient_penalty"),
])
def test_bad_compile_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        _gan(**kwargs)
