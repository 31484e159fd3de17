"""Adding spectral normalization to an existing model, and reading its sigmas."""

from __future__ import annotations

from typing import Callable

import keras

from keras_bssn import spectral
from keras_bssn._keras_internals import flatten_layers
from keras_bssn.strict import StrictSpectralNormalization
from keras_bssn.wrappers import (
    BidirectionalSpectralNormalization,
    SpectralNormalization,
    _NormalizedKernelWrapper,
)

METHODS = {
    "sn": SpectralNormalization,
    "ssn": SpectralNormalization,
    "bsn": BidirectionalSpectralNormalization,
    "bssn": BidirectionalSpectralNormalization,
    "strict": StrictSpectralNormalization,
}


def _is_supported(layer: keras.layers.Layer) -> bool:
    try:
        spectral.kernel_layout(layer)
    except ValueError:
        return False
    return True


def _wrapper_class(method: str) -> type[_NormalizedKernelWrapper]:
    try:
        return METHODS[method.lower()]
    except KeyError:
        raise ValueError(f"Unknown normalization method {method!r}; choose one of "
                         f"{sorted(METHODS)}.") from None


def spectral_normalize(
    model: keras.Model,
    method: str = "bssn",
    scale: float = 1.0,
    power_iterations: int = 1,
    eps: float = 1e-12,
    layer_filter: Callable[[keras.layers.Layer], bool] | None = None,
    differentiable_power_iteration: bool = False,
    vector_updates: str = "in_call",
) -> keras.Model:
    """Returns a copy of a Sequential or functional model with its layers normalized.

    Every supported layer (Dense, EinsumDense, convolutions, transposed and depthwise
    convolutions, Embedding) for which `layer_filter` returns True is wrapped; the copy starts
    from the original's weights. Nested Sequential/functional models are converted too. The
    original model is left untouched.

    Args:
        model: a built Sequential or functional model.
        method: "sn" / "ssn" (SpectralNormalization), "bsn" / "bssn"
            (BidirectionalSpectralNormalization) or "strict" (StrictSpectralNormalization);
            the scale is `scale` in every case.
        scale: the constant c.
        power_iterations: power-iteration steps per training call.
        eps: floor on sigma.
        layer_filter: which supported layers to wrap (default: all of them). Unsupported layers
            are never wrapped.
        differentiable_power_iteration: back-propagate through the power iteration (the
            official BSN code) instead of holding u and v constant (Miyato et al., PyTorch).
        vector_updates: "in_call" (every training call stores the advanced u) or "explicit"
            (only `advance_power_iteration(model)` does, e.g. after each optimizer step).

    Returns:
        The converted model.

    Raises:
        ValueError: for a subclassed model (wrap its layers by hand instead), an unbuilt
            model, a model that is already normalized, or an unknown method.

    Example:

    ```python
    discriminator = keras.Sequential([
        keras.Input((32, 32, 3)),
        keras.layers.Conv2D(64, 3, name="conv"),
        keras.layers.Flatten(),
        keras.layers.Dense(1, name="logits"),
    ])
    normalized = spectral_normalize(discriminator, method="bssn", scale=1.2,
                                    layer_filter=lambda layer: layer.name != "logits")
    ```
    """
    wrapper_class = _wrapper_class(method)
    if not _is_graph_model(model):
        raise ValueError(
            f"spectral_normalize needs a Sequential or functional model; {type(model).__name__} "
            "is a subclassed model, whose call() cannot be rewired. Wrap its layers by hand "
            "where they are created, e.g. `self.conv = keras_bssn."
            "BidirectionalSpectralNormalization(keras.layers.Conv2D(64, 3), scale=1.2)`."
        )
    if not model.built:
        raise ValueError("spectral_normalize needs a built model: give it an Input layer or "
                         "call it on data first.")
    already = normalized_layers(model)
    if already:
        raise ValueError(
            f"The model is already spectrally normalized ({len(already)} wrapped layers, e.g. "
            f"'{already[0].name}'); convert the original, unnormalized model instead.")
    selected = layer_filter or (lambda layer: True)

    def clone_layer(layer: keras.layers.Layer) -> keras.layers.Layer:
        fresh = layer.__class__.from_config(layer.get_config())
        if _is_supported(layer) and selected(layer):
            return wrapper_class(fresh, scale=scale, power_iterations=power_iterations,
                                 eps=eps, differentiable_power_iteration=(
                                     differentiable_power_iteration),
                                 vector_updates=vector_updates, name=layer.name)
        return fresh

    converted = keras.models.clone_model(model, clone_function=clone_layer, recursive=True)
    _copy_weights(model, converted)
    return converted


def _is_graph_model(model: keras.Model) -> bool:
    # Functional models (keras.Model(inputs, outputs)) are graphs of Keras operations, a
    # `keras.Function`; subclassed models have only Python code in call().
    return isinstance(model, (keras.Sequential, keras.Function))


def _copy_weights(source: keras.Model, target: keras.Model) -> None:
    for original, copy in zip(source.layers, target.layers):
        if isinstance(copy, _NormalizedKernelWrapper):
            copy.layer.set_weights(original.get_weights())
        elif isinstance(original, keras.Model):
            _copy_weights(original, copy)
        else:
            copy.set_weights(original.get_weights())


def normalized_layers(model: keras.layers.Layer) -> list[_NormalizedKernelWrapper]:
    """Every normalization wrapper inside `model` (nested models included), in order.

    Args:
        model: a model or layer.

    Returns:
        The wrappers, in the order of the model's layers.
    """
    return [layer for layer in flatten_layers(model, include_self=True)
            if isinstance(layer, _NormalizedKernelWrapper)]


def advance_power_iteration(model: keras.layers.Layer) -> None:
    """Advances the stored vectors of every wrapped layer with `vector_updates="explicit"`.

    Call it after each optimizer step of a model built as the official BSN code trains (its
    training calls look ahead from the stored vectors without storing them). Wrappers that
    advance in their own calls are left alone.

    Args:
        model: a model or layer holding normalization wrappers.

    Example:

    ```python
    discriminator = spectral_normalize(
        keras.Sequential([keras.Input((16,)), keras.layers.Dense(1)]),
        vector_updates="explicit")
    discriminator(np.zeros((4, 16)), training=True)  # looks ahead, stores no vector
    # ... the optimizer updates the kernels ...
    advance_power_iteration(discriminator)  # advances u from the updated kernels
    ```
    """
    for layer in normalized_layers(model):
        if layer.vector_updates == "explicit":
            layer.advance_vectors()


def collect_sigmas(model: keras.layers.Layer) -> dict:
    """The current sigma estimates of every wrapped layer, for logging.

    Reads the stored power-iteration vectors without advancing them, so it can run inside a
    `train_step`. Keys are `sigma/<layer>` for single-view layers and `sigma/<layer>_view1`,
    `sigma/<layer>_view2` for BSN layers with two views.

    Args:
        model: a model or layer holding normalization wrappers.

    Returns:
        A dict from those keys to scalar tensors.

    Example:

    ```python
    discriminator = spectral_normalize(keras.Sequential([
        keras.Input((32, 32, 3)),
        keras.layers.Conv2D(64, 3, name="conv1"),
        keras.layers.Flatten(),
        keras.layers.Dense(1, name="logits"),
    ]), method="bsn")
    sigmas = {name: float(value) for name, value in collect_sigmas(discriminator).items()}
    # keys "sigma/conv1_view1", "sigma/conv1_view2" and "sigma/logits"
    ```
    """
    sigmas = {}
    for layer in normalized_layers(model):
        # Values to log: no gradient (under PyTorch a tensor that requires one warns on float()).
        estimates = [keras.ops.stop_gradient(estimate) for estimate in layer.sigma_estimates()]
        if len(estimates) == 1:
            sigmas[f"sigma/{layer.name}"] = estimates[0]
        else:
            for index, estimate in enumerate(estimates):
                sigmas[f"sigma/{layer.name}_view{index + 1}"] = estimate
    return sigmas
