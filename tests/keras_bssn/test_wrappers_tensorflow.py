"""Wrapper behaviour that needs TensorFlow: tf.distribute, SavedModel export, XLA."""

import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

from keras_bssn import BidirectionalSpectralNormalization, SpectralNormalization
from tests.strategies import two_cpu_strategy

tf = pytest.importorskip("tensorflow")
pytestmark = pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                                reason="TensorFlow-backend features")


def _discriminator() -> keras.Model:
    inputs = keras.Input((8, 8, 3))
    x = BidirectionalSpectralNormalization(keras.layers.Conv2D(8, 3, strides=2), scale=1.3,
                                           name="conv")(inputs)
    x = keras.layers.LeakyReLU(0.1)(x)
    x = keras.layers.Flatten()(x)
    outputs = SpectralNormalization(keras.layers.Dense(1), scale=1.3, name="logits")(x)
    return keras.Model(inputs, outputs)


def _train(strategy, initial_weights, x, y, steps):
    with strategy.scope():
        model = _discriminator()
        model.set_weights(initial_weights)
        model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(len(x)).repeat()
    model.fit(dataset, steps_per_epoch=steps, epochs=1, verbose=0)
    return model


def test_mirrored_strategy_keeps_vectors_identical_and_equal_to_one_device():
    devices = tf.config.list_logical_devices("CPU")
    assert len(devices) >= 2, "conftest configures two logical CPUs"
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 8, 8, 3)).astype("float32")
    y = rng.standard_normal((8, 1)).astype("float32")
    initial = _discriminator().get_weights()

    single = _train(tf.distribute.OneDeviceStrategy("/cpu:0"), initial, x, y, steps=4)
    mirrored = _train(two_cpu_strategy(), initial, x, y,
                      steps=4)

    for vector in (v for v in mirrored.non_trainable_weights):
        replicas = [component.numpy() for component in vector.value.values]
        assert len(replicas) == 2
        np.testing.assert_array_equal(replicas[0], replicas[1])
    for single_weight, mirrored_weight in zip(single.get_weights(), mirrored.get_weights()):
        np.testing.assert_allclose(single_weight, mirrored_weight, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(single.predict(x, verbose=0), mirrored.predict(x, verbose=0),
                               rtol=1e-5, atol=1e-6)
    assert not np.allclose(initial[-1], single.non_trainable_weights[-1].numpy())


def test_jit_compiled_training_matches_eager():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((4, 8, 8, 3)).astype("float32")
    y = rng.standard_normal((4, 1)).astype("float32")
    initial = _discriminator().get_weights()
    results = []
    for jit in (False, True):
        model = _discriminator()
        model.set_weights(initial)
        model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse", jit_compile=jit)
        model.fit(x, y, batch_size=4, epochs=3, verbose=0)
        results.append(model.get_weights())
    for eager, compiled in zip(*results):
        np.testing.assert_allclose(eager, compiled, rtol=1e-4, atol=1e-5)


def test_model_export_reproduces_outputs_in_a_process_without_keras_bssn(tmp_path):
    model = _discriminator()
    x = np.random.default_rng(2).standard_normal((3, 8, 8, 3)).astype("float32")
    for _ in range(2):
        model(x, training=True)
    export_dir = tmp_path / "exported"
    model.export(str(export_dir), verbose=False)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "expected.npy", model.predict(x, verbose=0))
    script = textwrap.dedent(f"""
        import numpy as np, sys, tensorflow as tf
        loaded = tf.saved_model.load({str(export_dir)!r})
        outputs = loaded.serve(np.load({str(tmp_path / 'x.npy')!r}))
        assert "keras_bssn" not in sys.modules
        np.testing.assert_allclose(outputs.numpy(), np.load({str(tmp_path / 'expected.npy')!r}),
                                   rtol=1e-5, atol=1e-6)
        print("ok")
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("ok")


def test_tf_train_checkpoint_restores_power_iteration_vectors(tmp_path):
    model = _discriminator()
    x = np.random.default_rng(3).standard_normal((2, 8, 8, 3)).astype("float32")
    for _ in range(3):
        model(x, training=True)
    path = tf.train.Checkpoint(model=model).write(str(tmp_path / "ckpt"))
    restored = _discriminator()
    tf.train.Checkpoint(model=restored).read(path).assert_existing_objects_matched()
    assert len(model.non_trainable_weights) == 3
    for original, loaded in zip(model.non_trainable_weights, restored.non_trainable_weights):
        np.testing.assert_array_equal(original.numpy(), loaded.numpy())
