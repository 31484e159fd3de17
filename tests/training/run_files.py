"""Reading what a training run left in its folder, for tests that compare runs."""

from __future__ import annotations

import pathlib

import numpy as np


def checkpoint_values(run_dir: pathlib.Path) -> dict[str, np.ndarray]:
    """Every tensor of the run's newest checkpoint, by name (the save counter and the object
    graph left out: they differ between runs that train the same)."""
    import tensorflow as tf

    reader = tf.train.load_checkpoint(str(run_dir / "checkpoints"))
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()
            if not name.startswith(("save_counter", "_CHECKPOINTABLE_OBJECT_GRAPH"))}


def assert_same_checkpoints(expected: dict[str, np.ndarray], actual: dict[str, np.ndarray]
                            ) -> None:
    """The two checkpoints hold the same tensors, bit for bit."""
    assert expected.keys() == actual.keys()
    for name, value in expected.items():
        np.testing.assert_array_equal(actual[name], value, err_msg=name)


def assert_trained_alike(expected: dict[str, np.ndarray], actual: dict[str, np.ndarray],
                         steps: int, learning_rate: float = 1e-4) -> None:
    """Two checkpoints of the same training, summed in another order (another device layout).

    At initialization many LeakyReLU inputs sit near 0, where a rounding difference switches
    the slope (1 or 0.1), so single gradient entries (and Adam's moments) can differ a lot;
    but Adam moves a weight at most about `learning_rate` per step, so the networks' weights
    and vectors agree within 2 * learning_rate * steps. BatchNorm's moving statistics average
    activations, each a sum over a layer's fan-in, so one entry can differ by many times that;
    as a whole they agree within 2% (relative norm; rounding has given up to 0.6%). A layout
    bug moves them much more: statistics updated once per replica advance the moving average
    twice per step (after 6 steps at momentum 0.9, 72% of the way instead of 47%).
    """
    assert expected.keys() == actual.keys()
    bound = 2 * learning_rate * steps
    for name, value in expected.items():
        if not name.startswith("gan/"):
            continue
        if "/moving_mean/" in name or "/moving_variance/" in name:
            difference = np.linalg.norm(actual[name] - value) / np.linalg.norm(value)
            assert difference < 0.02, (name, difference)
        else:
            np.testing.assert_allclose(actual[name], value, rtol=1e-3, atol=bound, err_msg=name)
