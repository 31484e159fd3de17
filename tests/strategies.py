"""One two-replica MirroredStrategy for the whole test session.

Each new MirroredStrategy numbers its collective operations from the same starting keys, and
TensorFlow keeps collective state per process, so a second strategy's all-reduce can be
matched with the first one's ("Shape mismatch in the collective instance"). Tests share one.
"""

import functools

import tensorflow as tf


@functools.cache
def two_cpu_strategy() -> tf.distribute.MirroredStrategy:
    """MirroredStrategy over the two logical CPUs that tests/conftest.py configures."""
    return tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
