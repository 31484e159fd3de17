"""The one step counter of a run: the generator's optimizer iterations."""

from __future__ import annotations

import keras


def generator_step(gan: keras.Model) -> int:
    """The GAN's generator step as a Python int.

    Reads the value through `keras.ops`: under a `tf.distribute` strategy the counter is a
    MirroredVariable, which `int()` refuses.
    """
    return int(keras.ops.convert_to_numpy(gan.g_optimizer.iterations))

