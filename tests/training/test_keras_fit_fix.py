"""`training.keras_fit_fix`: the import-time check of the Keras trainer internals it patches,
and its helpers. `fit` with the mixin is tested in test_distribute.py."""

import importlib.util
import re
import types

import keras
import pytest

from training import keras_fit_fix
from training.keras_fit_fix import is_multi_worker


def _import_afresh() -> types.ModuleType:
    """Runs the module's code again, as a first import would, under a throwaway name.

    Not `importlib.reload`: that would replace `MultiWorkerFitMixin` in the module every other
    import already holds.
    """
    spec = importlib.util.spec_from_file_location("_keras_fit_fix_probe", keras_fit_fix.__file__)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _remove(monkeypatch: pytest.MonkeyPatch, cls: type, name: str) -> None:
    """Deletes `cls.name` wherever the class hierarchy defines it, until the test ends."""
    for owner in cls.__mro__:
        if name in vars(owner):
            monkeypatch.delattr(owner, name)
    assert not hasattr(cls, name)


def test_the_module_imports_with_the_installed_keras():
    assert _import_afresh().TESTED_KERAS == "3.15"


@pytest.mark.parametrize("name", ["_maybe_symbolic_build", "_make_function", "_flatten_layers"])
def test_a_missing_trainer_internal_is_a_clear_import_error_under_tensorflow(monkeypatch, name):
    _remove(monkeypatch, keras.Model, name)
    with pytest.raises(ImportError, match=(
            rf"overrides the private Keras method Model\.{name}, which the installed Keras "
            rf"{re.escape(keras.__version__)} does not have\. The training system is tested "
            r"with Keras 3\.15 only\. Fix: pip install -r requirements\.txt")):
        _import_afresh()

    monkeypatch.setattr(keras.backend, "backend", lambda: "jax")
    _import_afresh()  # the trainer it patches is TensorFlow's


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

    logs = keras_fit_fix._with_replica_axis(train_step)(None)

    assert {key: tuple(value.shape) for key, value in logs.items()} == {
        "loss": (1,), "count": (1,), "per_class": (3,)}
    assert float(keras.ops.convert_to_numpy(logs["loss"])[0]) == 1.5
