"""The GAN model: its train step, power-iteration bookkeeping, strategies, EMA, saving."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_bssn import BidirectionalSpectralNormalization, SpectralNormalization, spectral
from training import gan as gan_module
from training.callbacks.checkpoints import RunCheckpoint
from training.callbacks.steps import generator_step
from training.distribute import replica_latents
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


def _discriminator(**wrapper_options) -> keras.Model:
    images = keras.Input((8, 8, 3))
    x = BidirectionalSpectralNormalization(keras.layers.Conv2D(8, 3, strides=2), scale=1.2,
                                           name="conv", **wrapper_options)(images)
    x = keras.layers.Flatten()(keras.layers.LeakyReLU(0.1)(x))
    logits = SpectralNormalization(keras.layers.Dense(1), scale=1.2, name="logits",
                                   **wrapper_options)(x)
    return keras.Model(images, logits, name="discriminator")


# How the official BSN code trains (paper.md): the gradient through the power iteration, u
# advanced after each D update, the D step's latents reused in the G step.
OFFICIAL_WRAPPERS = {"differentiable_power_iteration": True, "vector_updates": "explicit"}


def _gan(n_dis=1, ema_decay=None, wrapper_options=None, **compile_kwargs) -> GAN:
    gan = GAN(_generator(), _discriminator(**(wrapper_options or {})), ema_decay=ema_decay,
              seed=3)
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


def _train(strategy, initial, steps=3, global_batch=8, **gan_kwargs):
    with strategy.scope():
        gan = _gan(**gan_kwargs)
        gan.generator.set_weights(initial[0])
        gan.discriminator.set_weights(initial[1])
    _fit(gan, global_batch, steps)
    return gan


@pytest.mark.parametrize("semantics", [
    {}, {"wrapper_options": OFFICIAL_WRAPPERS, "reuse_latents": True}], ids=["keras", "official"])
def test_two_replicas_train_like_one_device_with_the_same_global_batch(semantics):
    reference = _gan(**semantics)
    initial = (reference.generator.get_weights(), reference.discriminator.get_weights())
    single = _train(tf.distribute.OneDeviceStrategy("/cpu:0"), initial, **semantics)
    mirrored = _train(two_cpu_strategy(), initial, **semantics)
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
    sampling_generator = gan.prepare_sampling_generator()
    averaged = [w.numpy() for w in sampling_generator.trainable_weights]
    for old, new, average in zip(before, after, averaged):
        np.testing.assert_allclose(average, 0.9 * old + 0.1 * new, rtol=1e-5, atol=1e-7)
    assert sampling_generator is gan.ema_generator
    plain = _gan()
    assert plain.prepare_sampling_generator() is plain.generator


def test_the_sampling_generator_gets_the_live_batchnorm_statistics():
    gan = _gan(ema_decay=0.9)
    _fit(gan, 8, 2)
    statistics = [w.numpy() for w in gan.generator.non_trainable_weights]
    stale = [w.numpy() for w in gan.ema_generator.non_trainable_weights]
    assert not all(np.array_equal(a, b) for a, b in zip(stale, statistics))  # training moved them

    sampling_generator = gan.prepare_sampling_generator()

    for copied, live in zip(sampling_generator.non_trainable_weights, statistics):
        np.testing.assert_array_equal(copied.numpy(), live)


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
    np.testing.assert_allclose(gan.prepare_sampling_generator().predict(latents, verbose=0),
                               restored.prepare_sampling_generator().predict(latents, verbose=0),
                               rtol=1e-6)


@pytest.mark.parametrize("kwargs, message", [
    ({"n_dis": 0}, "n_dis"),
    ({"generator_bn_updates": "never"}, "generator_bn_updates"),
    ({"reuse_latents": True, "generator_batch_size": 16}, "reuse_latents"),
    ({"loss": "lsgan"}, "Unknown GAN loss"),
    ({"gradient_penalty": -1.0}, "gradient_penalty"),
])
def test_bad_compile_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        _gan(**kwargs)


def _numpy_power_iteration(matrix, u):
    v = u @ matrix.T
    v /= np.linalg.norm(v)
    u = v @ matrix
    return u / np.linalg.norm(u)


def test_explicit_updates_advance_u_once_per_d_update_from_the_updated_weights():
    gan = _gan(n_dis=2, wrapper_options=OFFICIAL_WRAPPERS)
    conv = gan.discriminator.get_layer("conv")
    u_before = [vector.numpy() for vector in conv.vectors]
    weights_by_update = []
    original = gan.d_optimizer.apply_gradients

    def recording_apply(grads_and_vars):
        result = original(grads_and_vars)
        weights_by_update.append(conv.layer.kernel.numpy())
        return result

    gan.d_optimizer.apply_gradients = recording_apply
    gan.compile(d_optimizer=gan.d_optimizer, g_optimizer=gan.g_optimizer, n_dis=2,
                run_eagerly=True)
    _fit(gan, 16, 1)
    assert len(weights_by_update) == 2
    expected = u_before
    for kernel in weights_by_update:  # one iteration after each update, from its weights
        views = spectral.matrix_views(kernel.astype(np.float64), conv.layout, np)
        expected = [_numpy_power_iteration(view, u) for view, u in zip(views, expected)]
    for vector, u in zip(conv.vectors, expected):
        np.testing.assert_allclose(vector.numpy(), u, rtol=1e-4, atol=1e-6)


def _generator_loss_of(gan, generator_weights, latents, training):
    generator = keras.models.clone_model(gan.generator)
    generator.set_weights(generator_weights)
    fake = generator(latents, training=True)
    mapping = [(weight, weight.value) for weight in gan.discriminator.weights]
    with keras.StatelessScope(state_mapping=mapping):  # D's vectors stay as they are
        return -float(np.mean(gan.discriminator(fake, training=training).numpy()))


@pytest.mark.parametrize("reuse_latents", [True, False])
def test_official_generator_step_reuses_d_latents_and_looks_ahead_from_stored_u(reuse_latents):
    gan = _gan(wrapper_options=OFFICIAL_WRAPPERS, reuse_latents=reuse_latents)
    generator_before = gan.generator.get_weights()
    history = _fit(gan, 8, 1)
    d_step_latents = replica_latents(8, LATENT_DIM, seed=(3, 0), step=0)
    look_ahead = _generator_loss_of(gan, generator_before, d_step_latents, training=True)
    logged = history.history["g_loss"][-1]
    if reuse_latents:
        np.testing.assert_allclose(logged, look_ahead, rtol=1e-4, atol=1e-6)
        stored_sigma = _generator_loss_of(gan, generator_before, d_step_latents, training=False)
        assert abs(stored_sigma - look_ahead) > 1e-4 * abs(look_ahead)
    else:
        assert abs(logged - look_ahead) > 1e-4 * abs(look_ahead)


@pytest.mark.parametrize("generator_bn_updates, forwards", [("every_forward", 2),
                                                           ("generator_step", 1)])
def test_generator_batchnorm_statistics_move_in_the_forwards_the_setting_names(
        generator_bn_updates, forwards):
    gan = _gan(reuse_latents=True, generator_bn_updates=generator_bn_updates)
    norm = next(layer for layer in gan.generator.layers
                if isinstance(layer, keras.layers.BatchNormalization))
    dense = gan.generator.layers[1]
    latents = replica_latents(8, LATENT_DIM, seed=(3, 0), step=0)
    batch_mean = np.mean(dense(latents).numpy(), axis=0)  # G is unchanged until its update
    _fit(gan, 8, 1)
    momentum = norm.momentum
    # Each training forward on the same latents: mean <- m * mean + (1 - m) * batch_mean.
    np.testing.assert_allclose(norm.moving_mean.numpy(), (1 - momentum**forwards) * batch_mean,
                               rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("wrapper_options, training", [(OFFICIAL_WRAPPERS, True), ({}, False)])
def test_the_gradient_penalty_sees_the_discriminator_of_the_loss(wrapper_options, training):
    gan = _gan(loss="wasserstein", gradient_penalty=1.0, wrapper_options=wrapper_options)
    real = _real_images(8)
    fake = np.tanh(np.random.default_rng(1).standard_normal((8, 8, 8, 3))).astype("float32")
    penalty = gan._gradient_penalty(real, fake, 0)
    mix = gan._latents(8, gan_module._PENALTY_STREAM, 0, width=1, uniform=True)
    interpolates = tf.constant(real + np.reshape(mix, (-1, 1, 1, 1)) * (fake - real))

    def penalty_of(discriminator_training):
        with tf.GradientTape() as tape:
            tape.watch(interpolates)
            logits = gan.discriminator(interpolates, training=discriminator_training)
        norms = tf.norm(tf.reshape(tape.gradient(logits, interpolates), (8, -1)), axis=1)
        return (norms - 1.0) ** 2

    # Official: the look-ahead sigma the loss's training call uses; in-call updates: the u
    # that call stored (a training call here would advance it again).
    np.testing.assert_allclose(penalty, penalty_of(training), rtol=1e-4)
    if training:
        assert not np.allclose(penalty, penalty_of(False), rtol=1e-3)


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_trains_like_float32(policy):
    reference = _gan(wrapper_options=OFFICIAL_WRAPPERS, reuse_latents=True)
    initial = (reference.generator.get_weights(), reference.discriminator.get_weights())
    deltas = {}
    for trained_policy in ("float32", policy):
        keras.config.set_dtype_policy(trained_policy)
        try:
            gan = _gan(wrapper_options=OFFICIAL_WRAPPERS, reuse_latents=True)
            gan.generator.set_weights(initial[0])
            gan.discriminator.set_weights(initial[1])
            history = _fit(gan, 8, 2)
        finally:
            keras.config.set_dtype_policy("float32")
        assert np.isfinite(history.history["d_loss"][-1])
        deltas[trained_policy] = [after - before for before, after in
                                  zip(initial[1], gan.discriminator.get_weights())]
    # Weights, BatchNorm statistics, power-iteration vectors, optimizer slots, the logged means.
    variables = [*gan.weights, *gan.d_optimizer.variables, *gan.g_optimizer.variables,
                 *(variable for tracker in gan.metrics for variable in tracker.variables)]
    assert {variable.dtype for variable in variables if "float" in variable.dtype} == {"float32"}
    scaled = [isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
              for optimizer in (gan.d_optimizer, gan.g_optimizer)]
    if policy == "mixed_float16":  # float16 gradients underflow without it
        assert all(scaled)
        assert all(float(optimizer.dynamic_scale) > 1.0  # the loss was scaled up
                   for optimizer in (gan.d_optimizer, gan.g_optimizer))
    else:  # bfloat16 has float32's exponent range
        assert not any(scaled)
    assert int(gan.g_optimizer.iterations) == 2
    kernel = 0  # the conv kernel: 16-bit compute, float32 updates close to float32 training
    np.testing.assert_allclose(deltas[policy][kernel], deltas["float32"][kernel],
                               rtol=0.1, atol=2e-4)


def test_input_gradients_measured_every_kth_step_are_those_of_every_step():
    def trained(every, steps_per_epoch, epochs):
        keras.utils.set_random_seed(0)
        gan = _gan(input_gradient_every=every)
        gan.fit(_dataset(8, 6), steps_per_epoch=steps_per_epoch, epochs=epochs, verbose=0)
        return gan

    every_step = trained(1, steps_per_epoch=1, epochs=6).history.history
    sampled = trained(3, steps_per_epoch=3, epochs=2)
    # Steps 0 and 3 are measured; training itself is untouched by the measuring.
    for name in ("grad_norm_real", "grad_norm_fake"):
        np.testing.assert_allclose(sampled.history.history[name],
                                   [every_step[name][0], every_step[name][3]], rtol=1e-6)
    for before, after in zip(trained(1, 6, 1).get_weights(), sampled.get_weights()):
        np.testing.assert_array_equal(before, after)


def _record_draws(monkeypatch) -> list[tuple[int, int, np.ndarray]]:
    """(stream, step, values) of every latent draw of the GAN's train steps (run eagerly)."""
    draws = []

    def recording(batch_size, latent_dim, seed, step, uniform=False):
        values = replica_latents(batch_size, latent_dim, seed, step, uniform)
        draws.append((int(seed[1]), int(step), values.numpy()))
        return values

    monkeypatch.setattr(gan_module, "replica_latents", recording)
    return draws


def test_without_overflows_the_latents_are_drawn_for_the_optimizers_iterations(monkeypatch):
    draws = _record_draws(monkeypatch)
    gan = _gan(n_dis=2, loss="wasserstein", gradient_penalty=1.0, run_eagerly=True)
    _fit(gan, 8 * 2, 2)
    d_updates = [step for stream, step, _ in draws if stream == gan_module._DISCRIMINATOR_STREAM]
    penalties = [step for stream, step, _ in draws if stream == gan_module._PENALTY_STREAM]
    g_updates = [step for stream, step, _ in draws if stream == gan_module._GENERATOR_STREAM]
    assert d_updates == penalties == [0, 1, 2, 3] and g_updates == [0, 1]
    assert int(gan.d_optimizer.iterations) == 4 and generator_step(gan) == 2


def test_the_step_moves_once_per_train_step_when_loss_scaling_skips_the_updates(monkeypatch):
    draws = _record_draws(monkeypatch)
    keras.config.set_dtype_policy("mixed_float16")
    try:
        gan = GAN(_generator(), _discriminator(), seed=3)
        # A loss scale that overflows float16 gradients: every update of the first steps
        # is skipped, as dynamic loss scaling does now and then.
        overflowing = [keras.optimizers.LossScaleOptimizer(keras.optimizers.Adam(),
                                                           initial_scale=2.0**40)
                       for _ in range(2)]
        gan.compile(d_optimizer=overflowing[0], g_optimizer=overflowing[1], n_dis=2,
                    run_eagerly=True)
        _fit(gan, 8 * 2, 3)
    finally:
        keras.config.set_dtype_policy("float32")
    assert int(gan.d_optimizer.iterations) == int(gan.g_optimizer.iterations) == 0  # skipped
    assert generator_step(gan) == 3
    d_draws = [(step, values) for stream, step, values in draws
               if stream == gan_module._DISCRIMINATOR_STREAM]
    assert [step for step, _ in d_draws] == list(range(6))
    for (_, before), (_, after) in zip(d_draws, d_draws[1:]):
        assert not np.allclose(before, after)


def test_a_checkpoint_saved_before_the_gan_counted_its_steps_resumes_from_its_step(tmp_path):
    trained = _gan(ema_decay=0.9)
    _fit(trained, 8, 2)
    del trained.step  # as the GAN was before it had a step counter of its own
    old_format = tf.train.Checkpoint(gan=trained, d_optimizer=trained.d_optimizer,
                                     g_optimizer=trained.g_optimizer)
    tf.train.CheckpointManager(old_format, tmp_path, max_to_keep=3).save(checkpoint_number=2)
    assert not any(name.startswith("gan/step/") for name, _ in tf.train.list_variables(
        str(tmp_path / "ckpt-2")))

    resumed = _gan(ema_decay=0.9)
    assert RunCheckpoint(resumed, tmp_path).restore() == 2
    assert generator_step(resumed) == 2
    for one, two in zip(trained.generator.get_weights(), resumed.generator.get_weights()):
        np.testing.assert_array_equal(one, two)
    for one, two in zip(trained._ema_weights, resumed._ema_weights):
        np.testing.assert_array_equal(one.numpy(), two.numpy())
    _fit(resumed, 8, 1)
    assert generator_step(resumed) == 3


def test_a_checkpoint_holds_the_step_that_loss_scaling_did_not_count(tmp_path):
    gan = _gan()
    _fit(gan, 8, 2)
    gan.g_optimizer.iterations.assign(1)  # as if one generator update had been skipped
    RunCheckpoint(gan, tmp_path).save()
    resumed = _gan()
    assert RunCheckpoint(resumed, tmp_path).restore() == 2
    assert generator_step(resumed) == 2 and int(resumed.g_optimizer.iterations) == 1
