"""The supported layer kinds, each with an input that fits it, shared by the library tests."""

import keras
import numpy as np

# (id, layer factory, input shape without batch, integer inputs?)
LAYER_CASES = [
    ("dense", lambda: keras.layers.Dense(6), (5,), False),
    ("einsum_dense", lambda: keras.layers.EinsumDense("abc,cde->abde", (3, 4, 2)), (3, 5), False),
    ("conv1d", lambda: keras.layers.Conv1D(6, 3), (9, 4), False),
    ("conv2d", lambda: keras.layers.Conv2D(6, 3), (7, 7, 4), False),
    ("conv3d", lambda: keras.layers.Conv3D(5, 2), (4, 4, 4, 3), False),
    ("conv1d_transpose", lambda: keras.layers.Conv1DTranspose(5, 3, strides=2), (6, 4), False),
    ("conv2d_transpose", lambda: keras.layers.Conv2DTranspose(5, 4, strides=2), (5, 5, 3), False),
    ("conv3d_transpose", lambda: keras.layers.Conv3DTranspose(4, 2), (3, 3, 3, 3), False),
    ("depthwise_conv1d", lambda: keras.layers.DepthwiseConv1D(3, depth_multiplier=2), (8, 3),
     False),
    ("depthwise_conv2d", lambda: keras.layers.DepthwiseConv2D(3, depth_multiplier=2), (6, 6, 3),
     False),
    ("embedding", lambda: keras.layers.Embedding(11, 7), (4,), True),
]

CASE_IDS = [case[0] for case in LAYER_CASES]


def make_input(shape, integer, batch=2, seed=0):
    rng = np.random.default_rng(seed)
    if integer:
        return rng.integers(0, 10, size=(batch, *shape)).astype("int32")
    return rng.standard_normal((batch, *shape)).astype("float32")
