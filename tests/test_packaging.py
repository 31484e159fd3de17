"""What the wheel holds and declares (pyproject.toml) agrees with the repository and its pins."""

import pathlib
import re

import pytest
import setuptools
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

import keras_bssn

REPO_ROOT = pathlib.Path(__file__).parents[1]
tomllib = pytest.importorskip("tomllib")  # Python 3.11+
PYPROJECT = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
PROJECT = PYPROJECT["project"]
SETUPTOOLS = PYPROJECT["tool"]["setuptools"]


def _requirements(lines: list[str]) -> dict[str, Requirement]:
    return {canonicalize_name(req.name): req for req in map(Requirement, lines)}


def test_the_wheel_ships_keras_bssn_alone():
    find = SETUPTOOLS["packages"]["find"]
    packages = setuptools.find_packages(str(REPO_ROOT), include=find["include"],
                                        exclude=find.get("exclude", ()))
    assert "keras_bssn" in packages
    # No generic top-level name ("training", "tests"): the training system runs from a checkout.
    assert {package.split(".")[0] for package in packages} == {"keras_bssn"}


def test_the_version_has_one_source():
    assert "version" not in PROJECT and "version" in PROJECT["dynamic"]
    assert SETUPTOOLS["dynamic"]["version"] == {"attr": "keras_bssn.__version__"}
    assert re.fullmatch(r"\d+\.\d+\.\d+", keras_bssn.__version__)


def test_the_license_file_is_the_declared_apache_license():
    text = (REPO_ROOT / "LICENSE").read_text()
    assert "Apache License\n                           Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text
    assert PROJECT["license"] == {"text": "Apache-2.0"}
    assert SETUPTOOLS["license-files"] == ["LICENSE"]


def test_the_version_bounds_admit_exactly_the_tested_pins():
    pins = {name: next(iter(req.specifier)).version
            for name, req in _requirements(
                [line.split("#")[0].strip() for line in
                 (REPO_ROOT / "requirements.txt").read_text().splitlines()
                 if line.split("#")[0].strip()]).items()
            if len(req.specifier) == 1 and next(iter(req.specifier)).operator == "=="}
    library = _requirements(PROJECT["dependencies"])
    training = _requirements(PROJECT["optional-dependencies"]["training"])

    assert set(library) == {"keras"}
    assert {"tensorflow", "tensorflow-datasets", "importlib-resources"} <= set(training)
    for name, req in {**library, **training}.items():
        if name in pins:
            assert req.specifier.contains(pins[name]), (req, pins[name])
    # Upper bounds where untested releases could break us: Keras internals, TF, TFDS.
    for name in ("keras", "tensorflow", "tensorflow-datasets"):
        requirement = library.get(name) or training[name]
        assert any(spec.operator == "<" for spec in requirement.specifier), requirement
