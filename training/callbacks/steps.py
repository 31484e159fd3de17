"""The one step counter of a run: the GAN's own count of train steps."""

from __future__ import annotations

import keras


def generator_step(gan: keras.Model) -> int:
    """The GAN's step (`gan.step`, one per train step) as a Python int.

    Not the generator optimizer's `iterations`: dynamic loss scaling skips updates, and
    those do not count there.

    Reads the value through `keras.ops`: under a `tf.distribute` strategy the counter is a
    MirroredVariable, which `int()` refuses.
    """
    return int(keras.ops.convert_to_numpy(gan.step))
