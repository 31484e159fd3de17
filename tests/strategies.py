"""One two-replica MirroredStrategy for the whole test session.

Each new MirroredStrategy numbers its collective operations from the same starting keys, and
TensorFlow keeps collective state per process, so a second strategy's all-reduce can be
matched with the first one's ("Shape mismatch in the collective instance"). Tests share the
one `make_strategy("mirrored")` keeps for the process, which the training command uses too.
"""

import tensorflow as tf

from training.distribute import make_strategy


def two_cpu_strategy() -> tf.distribute.MirroredStrategy:
    """MirroredStrategy over the two logical CPUs that tests/conftest.py configures."""
    strategy = make_strategy("mirrored")
    assert strategy.num_replicas_in_sync == 2
    return strategy
