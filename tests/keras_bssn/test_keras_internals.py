"""`keras_bssn._keras_internals`: the import-time check of every private Keras internal, and
the helpers that wrap them. Backend-agnostic (run under TensorFlow and JAX by tests/run.sh)."""

import importlib.util
import pathlib
import re
import types

import keras
import pytest

import keras_bssn
from keras_bssn import SpectralNormalization, _keras_internals
from keras_bssn._keras_internals import autocast_disabled, flatten_layers, is_multi_worker

REPO_ROOT = pathlib.Path(keras_bssn.__file__).parents[1]


def _import_afresh() -> types.ModuleType:
    """Runs the module's code again, as a first import would, under a throwaway name.

    Not `importlib.reload`: that would replace `MultiWorkerFitMixin` and `AutocastScope` in
    the module every other import already holds.
    """
    spec = importlib.util.spec_from_file_location("_keras_internals_probe",
                                                  _keras_internals.__file__)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _remove(monkeypatch: pytest.MonkeyPatch, cls: type, name: str) -> None:
    """Deletes `cls.name` wherever the class hierarchy defines it, until the test ends."""
    for owner in cls.__mro__:
        if name in vars(owner):
            monkeypatch.delattr(owner, name)
    assert not hasattr(cls, name)


def _missing_internal_message(name: str) -> str:
    return (rf"private Keras internal {re.escape(name)}, which the installed Keras "
            rf"{re.escape(keras.__version__)} does not have\. keras_bssn is tested with Keras "
            rf">=3\.15,<3\.16 only.*Fix: pip install \"keras>=3\.15,<3\.16\"")


def test_the_module_imports_with_the_installed_keras():
    module = _import_afresh()
    assert module.TESTED_KERAS == ">=3.15,<3.16"


def test_a_missing_flatten_layers_is_a_clear_import_error(monkeypatch):
    _remove(monkeypatch, keras.layers.Layer, "_flatten_layers")
    with pytest.raises(ImportError,
                       match=_missing_internal_message("keras.layers.Layer._flatten_layers")):
        _import_afresh()


def test_a_missing_autocast_scope_is_a_clear_import_error(monkeypatch):
    from keras.src import backend  # where the internal lives: what a new Keras might change

    monkeypatch.delattr(backend, "AutocastScope")
    with pytest.raises(ImportError,
                       match=_missing_internal_message("keras.src.backend.AutocastScope")):
        _import_afresh()


TENSORFLOW_TRAINER_INTERNALS = ("_maybe_symbolic_build", "_make_function")


@pytest.mark.parametrize("name", TENSORFLOW_TRAINER_INTERNALS)
def test_the_tensorflow_trainer_internals_are_required_under_tensorflow_only(monkeypatch, name):
    # A TensorFlow trainer with all of them but `name` (under JAX, stand-ins for the others).
    for other in TENSORFLOW_TRAINER_INTERNALS:
        if other != name and not hasattr(keras.Model, other):
            monkeypatch.setattr(keras.Model, other, lambda self, *args, **kwargs: None,
                                raising=False)
    _remove(monkeypatch, keras.Model, name)
    monkeypatch.setattr(keras.backend, "backend", lambda: "jax")
    _import_afresh()  # the mixin that needs them is for the TensorFlow backend only

    monkeypatch.setattr(keras.backend, "backend", lambda: "tensorflow")
    with pytest.raises(ImportError, match=_missing_internal_message(
            f"the TensorFlow trainer's Model.{name}")):
        _import_afresh()


def test_the_tested_range_is_the_declared_dependency():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    assert project["dependencies"] == [f"keras{_keras_internals.TESTED_KERAS}"]


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
    layer = keras.layers.Dense(2, dtype="mixed_float16")
    layer.build((None, 3))
    with _keras_internals.AutocastScope("float16"):  # what Layer.__call__ opens
        assert keras.backend.standardize_dtype(layer.kernel.value.dtype) == "float16"
        with autocast_disabled():
            assert keras.backend.standardize_dtype(layer.kernel.value.dtype) == "float32"


def _strategy(extended: object) -> types.SimpleNamespace:
    return types.SimpleNamespace(extended=extended)


def test_multi_worker_mode_is_asked_of_the_strategy():
    assert is_multi_worker(_strategy(types.SimpleNamespace(_in_multi_worker_mode=lambda: True)))
    assert not is_multi_worker(
        _strategy(types.SimpleNamespace(_in_multi_worker_mode=lambda: False)))
    assert not is_multi_worker(_strategy(types.SimpleNamespace()))  # no such method: one worker


def test_the_train_step_logs_get_a_replica_axis_only_where_scalar():
    def train_step(data):
        return {"loss": keras.ops.convert_to_tensor(1.5), "count": 2,
                "per_class": keras.ops.ones((3,))}

    logs = _keras_internals._with_replica_axis(train_step)(None)

    assert {key: tuple(value.shape) for key, value in logs.items()} == {
        "loss": (1,), "count": (1,), "per_class": (3,)}
    assert float(keras.ops.convert_to_numpy(logs["loss"])[0]) == 1.5
