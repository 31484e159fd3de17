"""Test session set-up: quiet TensorFlow and two logical CPUs for strategy tests.

Logical devices must be configured before TensorFlow initialises its runtime, so this runs at
import time, before any test module touches TensorFlow.
"""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import training  # noqa: E402,F401  (TensorFlow's CPU kernels as the commands choose them)
import keras  # noqa: E402
import pytest  # noqa: E402

if keras.backend.backend() == "tensorflow":
    import tensorflow as tf

    _cpus = tf.config.list_physical_devices("CPU")
    tf.config.set_logical_device_configuration(
        _cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2
    )


@pytest.fixture(autouse=True)
def _fresh_keras_state():
    """Each test starts from a clear Keras session and a fixed seed."""
    keras.backend.clear_session()
    keras.utils.set_random_seed(1234)
    yield
