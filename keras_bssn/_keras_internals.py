"""The private Keras internals keras_bssn relies on, in one place, each checked when used.

keras_bssn declares `keras>=3.15,<4` (pyproject.toml) and is tested with Keras 3.15: the
names below are not part of Keras's public API and may change in any release. Importing
keras_bssn never depends on them. Each is looked up when a feature that needs it runs; if the
installed Keras lacks it, that feature raises a RuntimeError naming the internal, the installed
Keras version and the fix, and everything else keeps working. tests/keras_bssn/
test_keras_internals.py checks that each exists in the installed Keras. Nothing else under
keras_bssn/ may touch `keras.src` or a private Keras attribute: add it here, with why.

The internals and why each is needed:

* `keras.src.backend.AutocastScope`, used by `autocast_disabled()`: when no autocast scope is
  open, `Layer.__call__` (step 7, "Call the layer", in Keras 3.15) opens a float16 one around
  any layer whose compute and variable dtypes differ (mixed precision), even one created with
  `autocast=False`; `autocast=False` only clears a scope that is already open. A
  normalization wrapper has to read the float32 kernel for the power iteration, so it clears
  the scope itself. Keras has no public way to do that, and no upstream issue about it was
  found. A layer whose dtypes agree needs no internal: Keras opens no scope for it.
* `keras.layers.Layer._flatten_layers`, used by `flatten_layers()`: the only way to list the
  sub-layers a layer tracks as attributes (custom blocks, subclassed models, a wrapper's
  inner layer), recursively or not. `Model.layers` lists one level of a model only, and
  `Layer` has no public equivalent (Keras uses `_flatten_layers` itself for the same walk,
  e.g. to collect losses: https://github.com/keras-team/keras/pull/18828).
"""

from __future__ import annotations

import contextlib

import keras

# What pyproject.toml declares (keep them equal), and the Keras release keras_bssn is tested with.
KERAS_REQUIREMENT = "keras>=3.15,<4"
TESTED_KERAS = "3.15"


def _missing_internal(internal: str, needed_for: str, *workarounds: str) -> RuntimeError:
    fixes = [*workarounds, f'pip install "keras=={TESTED_KERAS}.*"']
    return RuntimeError(
        f"keras_bssn needs the private Keras internal {internal} {needed_for}, and the "
        f"installed Keras {keras.__version__} does not have it (keras_bssn supports "
        f"{KERAS_REQUIREMENT} and is tested with Keras {TESTED_KERAS}; the internals it relies "
        f"on are listed in {__name__}). Fix: {', or '.join(fixes)}.")


def autocast_disabled(layer: keras.layers.Layer) -> contextlib.AbstractContextManager:
    """A scope in which variables read as their own dtype, inside a call of `layer`.

    `layer` must be created with `autocast=False`: then only a mixed-precision `layer` (compute
    dtype other than its variable dtype) runs in an autocast scope that Keras opened for it.

    Args:
        layer: the layer whose call reads the variables.

    Returns:
        A context manager.

    Raises:
        RuntimeError: for a mixed-precision `layer` when the installed Keras lacks
            `keras.src.backend.AutocastScope`.

    Example:

    ```python
    with autocast_disabled(self):
        kernel = ops.cast(self.layer.kernel.value, "float32")  # the float32 variable itself
    ```
    """
    try:
        from keras.src.backend import AutocastScope
    except ImportError:
        if layer.compute_dtype == layer.variable_dtype:
            return contextlib.nullcontext()  # Keras opens no autocast scope for this layer
        raise _missing_internal(
            "keras.src.backend.AutocastScope",
            f"to read the variables of layer '{layer.name}' (dtype policy "
            f"'{layer.dtype_policy.name}') in their own dtype",
            "give the layer a dtype policy whose compute and variable dtypes agree "
            "(e.g. dtype=\"float32\")") from None
    return AutocastScope(None)


def flatten_layers(layer: keras.layers.Layer, include_self: bool = True,
                   recursive: bool = True) -> list[keras.layers.Layer]:
    """The layers `layer` tracks, depth first, each once (Keras's own `_flatten_layers`).

    Args:
        layer: any layer or model.
        include_self: put `layer` itself first.
        recursive: also list the sub-layers of sub-layers (a wrapper's inner layer comes right
            after the wrapper); False lists the direct sub-layers only.

    Returns:
        The layers, a list.

    Raises:
        RuntimeError: when the installed Keras lacks `Layer._flatten_layers`.
    """
    walk = getattr(layer, "_flatten_layers", None)
    if not callable(walk):
        raise _missing_internal(
            "keras.layers.Layer._flatten_layers",
            f"to list the layers inside '{layer.name}'")
    return list(walk(include_self=include_self, recursive=recursive))
