"""Choosing a discriminator layer's normalization by name."""

from __future__ import annotations

import keras

from keras_bssn.convert import METHODS

NORMALIZATIONS = ("none", *METHODS)


def check_normalization(norm: str, scale: float) -> None:
    """Refuses an unknown name, or a scale given with no normalization to scale."""
    if norm not in NORMALIZATIONS:
        raise ValueError(f"Unknown normalization {norm!r}; choose one of "
                         f"{', '.join(NORMALIZATIONS)}.")
    if norm == "none" and scale != 1.0:
        raise ValueError("`scale` multiplies a normalized weight; with norm='none' it must be 1.")


def normalized(layer: keras.layers.Layer, norm: str, scale: float,
               power_iterations: int = 1, **wrapper_options) -> keras.layers.Layer:
    """`layer` wrapped in the normalization `norm` ("none" returns it as it is).

    `wrapper_options` (`differentiable_power_iteration`, `vector_updates`) go to the wrapper.
    """
    if norm == "none":
        return layer
    return METHODS[norm](layer, scale=scale, power_iterations=power_iterations, name=layer.name,
                         **wrapper_options)
