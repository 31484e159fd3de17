"""Every ```python example in the library's docstrings runs as written, under each backend the
suite runs (an example sees its module's names, as a reader who imported them would)."""

import importlib
import inspect
import pkgutil
import re

import keras
import numpy as np
import pytest

import keras_bssn


def _documented_objects(module):
    yield module.__name__, module
    for name, value in vars(module).items():
        if getattr(value, "__module__", None) != module.__name__ or name.startswith("_"):
            continue
        yield f"{module.__name__}.{name}", value
        if inspect.isclass(value):
            for attribute, member in vars(value).items():
                if not attribute.startswith("_") and inspect.isfunction(member):
                    yield f"{module.__name__}.{name}.{attribute}", member


def _examples():
    modules = [keras_bssn] + [importlib.import_module(f"keras_bssn.{info.name}")
                              for info in pkgutil.iter_modules(keras_bssn.__path__)
                              if not info.name.startswith("_")]
    for module in modules:
        for name, value in _documented_objects(module):
            for index, code in enumerate(re.findall(r"```python\n(.*?)```",
                                                    inspect.getdoc(value) or "", flags=re.S)):
                yield pytest.param(module, code, id=f"{name}[{index}]")


def test_the_library_has_docstring_examples():
    assert len(list(_examples())) >= 10


@pytest.mark.parametrize("module, code", _examples())
def test_docstring_example_runs(module, code):
    namespace = {**vars(module), "np": np, "keras": keras, "keras_bssn": keras_bssn}
    exec(compile(code, module.__name__, "exec"), namespace)
