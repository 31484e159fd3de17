"""GAN losses against their formulas."""

import numpy as np
import pytest
from keras import ops

from training import losses

REAL = np.array([[2.0], [0.5], [-1.0]], "float32")
FAKE = np.array([[-2.0], [0.0], [1.5]], "float32")


def _np(pair):
    return [ops.convert_to_numpy(x) for x in pair]


def test_hinge_matches_the_reference():
    real_term, fake_term = _np(losses.discriminator_loss("hinge", REAL, FAKE))
    np.testing.assert_allclose(real_term, np.maximum(0, 1 - REAL[:, 0]))
    np.testing.assert_allclose(fake_term, np.maximum(0, 1 + FAKE[:, 0]))
    np.testing.assert_allclose(ops.convert_to_numpy(losses.generator_loss("hinge", FAKE)),
                               -FAKE[:, 0])


def test_non_saturating_is_binary_cross_entropy_on_logits():
    real_term, fake_term = _np(losses.discriminator_loss("non_saturating", REAL, FAKE))
    sigmoid = lambda x: 1 / (1 + np.exp(-x))  # noqa: E731
    np.testing.assert_allclose(real_term, -np.log(sigmoid(REAL[:, 0])), rtol=1e-5)
    np.testing.assert_allclose(fake_term, -np.log(1 - sigmoid(FAKE[:, 0])), rtol=1e-5)
    np.testing.assert_allclose(ops.convert_to_numpy(losses.generator_loss("non_saturating",
                                                                          FAKE)),
                               -np.log(sigmoid(FAKE[:, 0])), rtol=1e-5)


def test_wasserstein():
    real_term, fake_term = _np(losses.discriminator_loss("wasserstein", REAL, FAKE))
    np.testing.assert_allclose(real_term + fake_term, FAKE[:, 0] - REAL[:, 0])


def test_unknown_loss_names_the_choices():
    with pytest.raises(ValueError, match="hinge, non_saturating, wasserstein"):
        losses.generator_loss("lsgan", FAKE)
