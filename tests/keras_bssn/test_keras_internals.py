"""`keras_bssn._keras_internals`: the private Keras internals the library uses, checked when
used, never at import. Backend-agnostic (run under TensorFlow, JAX and PyTorch by tests/run.sh).
"""

import os
import pathlib
import re
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
from keras import ops

import keras_bssn
from keras_bssn import SpectralNormalization, _keras_internals, collect_sigmas
from keras_bssn._keras_internals import autocast_disabled, flatten_layers

REPO_ROOT = pathlib.Path(keras_bssn.__file__).parents[1]


def _remove(monkeypatch: pytest.MonkeyPatch, cls: type, name: str) -> None:
    """Deletes `cls.name` wherever the class hierarchy defines it, until the test ends."""
    for owner in cls.__mro__:
        if name in vars(owner):
            monkeypatch.delattr(owner, name)
    assert not hasattr(cls, name)


def _remove_autocast_scope(monkeypatch: pytest.MonkeyPatch) -> None:
    from keras.src import backend  # where the internal lives: what a new Keras might change

    monkeypatch.delattr(backend, "AutocastScope")


def _missing_internal_message(name: str) -> str:
    return (rf"private Keras internal {re.escape(name)} .*, and the installed Keras "
            rf"{re.escape(keras.__version__)} does not have it \(keras_bssn supports "
            r"keras>=3\.15,<4 and is tested with Keras 3\.15; .*\)\. Fix: .*"
            r"pip install \"keras==3\.15\.\*\"\.$")


def test_each_internal_exists_in_the_installed_keras():
    # The canary for a new Keras release: the library's features that need an internal
    # would raise (see the tests below).
    from keras.src.backend import AutocastScope

    assert callable(AutocastScope)
    assert callable(getattr(keras.layers.Layer, "_flatten_layers", None))


def test_keras_bssn_imports_and_wraps_without_any_private_internal():
    # A Keras without either internal: the import and a float32 wrapper still work.
    script = textwrap.dedent("""
        import keras
        import numpy as np
        from keras.src import backend

        del backend.AutocastScope
        for owner in keras.layers.Layer.__mro__:
            if "_flatten_layers" in vars(owner):
                delattr(owner, "_flatten_layers")

        import keras_bssn

        wrapper = keras_bssn.SpectralNormalization(keras.layers.Dense(2))
        outputs = wrapper(np.ones((1, 3), "float32"), training=True)
        print("outputs", tuple(outputs.shape))
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            cwd=REPO_ROOT, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
                            timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "outputs (1, 2)"


def test_a_missing_flatten_layers_is_a_clear_error_when_a_model_is_walked(monkeypatch):
    model = keras.Sequential([keras.Input((3,)), SpectralNormalization(keras.layers.Dense(2))],
                             name="discriminator")
    _remove(monkeypatch, keras.layers.Layer, "_flatten_layers")
    with pytest.raises(RuntimeError, match=_missing_internal_message(
            "keras.layers.Layer._flatten_layers")) as raised:
        collect_sigmas(model)
    assert "to list the layers inside 'discriminator'" in str(raised.value)


def test_a_missing_autocast_scope_is_a_clear_error_for_a_mixed_precision_wrapper(monkeypatch):
    wrapper = SpectralNormalization(keras.layers.Dense(2), dtype="mixed_float16", name="sn")
    wrapper(np.ones((1, 3), "float32"))
    _remove_autocast_scope(monkeypatch)
    with pytest.raises(RuntimeError, match=_missing_internal_message(
            "keras.src.backend.AutocastScope")) as raised:
        wrapper.sigma_estimates()
    message = str(raised.value)
    assert "to read the variables of layer 'sn' (dtype policy 'mixed_float16')" in message
    assert "Fix: give the layer a dtype policy whose compute and variable dtypes agree" in message


def test_without_autocast_scope_a_float32_wrapper_computes_what_it_did(monkeypatch):
    # The fallback is exact: Keras opens no autocast scope for a layer whose dtypes agree.
    wrapper = SpectralNormalization(keras.layers.Dense(4))
    inputs = np.random.default_rng(0).normal(size=(2, 3)).astype("float32")
    wrapper(inputs)
    expected = ops.convert_to_numpy(wrapper(inputs, training=False))
    expected_sigma = float(wrapper.sigma_estimates()[0])

    _remove_autocast_scope(monkeypatch)
    np.testing.assert_array_equal(ops.convert_to_numpy(wrapper(inputs, training=False)),
                                  expected)
    assert float(wrapper.sigma_estimates()[0]) == expected_sigma


def test_the_declared_keras_range_is_the_dependency():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    assert _keras_internals.KERAS_REQUIREMENT == "keras>=3.15,<4"
    assert _keras_internals.KERAS_REQUIREMENT in project["dependencies"]


class _Block(keras.layers.Layer):
    """A custom block: its sub-layers are attributes, in no public list."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.wrapper = SpectralNormalization(keras.layers.Dense(2, name="inner"), name="wrapper")
        self.plain = keras.layers.Dense(3, name="plain")


def test_flatten_layers_walks_attributes_depth_first():
    block = _Block(name="block")
    names = [layer.name for layer in flatten_layers(block)]
    assert names == ["block", "wrapper", "inner", "plain"]
    direct = [layer.name for layer in flatten_layers(block, include_self=False, recursive=False)]
    assert direct == ["wrapper", "plain"]


def test_autocast_disabled_reads_variables_in_their_own_dtype():
    from keras.src.backend import AutocastScope

    layer = keras.layers.Dense(2, dtype="mixed_float16")
    layer.build((None, 3))
    with AutocastScope("float16"):  # what Layer.__call__ opens
        assert keras.backend.standardize_dtype(layer.kernel.value.dtype) == "float16"
        with autocast_disabled(layer):
            assert keras.backend.standardize_dtype(layer.kernel.value.dtype) == "float32"
