"""What the wheel holds and declares (pyproject.toml) agrees with the repository and its pins."""

import json
import os
import pathlib
import re
import shutil
import subprocess
import sys

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

    assert set(library) == {"keras", "numpy"}  # what keras_bssn imports
    assert {"tensorflow", "tensorflow-datasets", "importlib-resources"} <= set(training)
    for name, req in {**library, **training}.items():
        if name in pins:
            assert req.specifier.contains(pins[name]), (req, pins[name])
    # Upper bounds where untested releases could break us: Keras internals, TF, TFDS.
    for name in ("keras", "tensorflow", "tensorflow-datasets"):
        requirement = library.get(name) or training[name]
        assert any(spec.operator == "<" for spec in requirement.specifier), requirement


@pytest.mark.slow
def test_the_installed_library_imports_outside_the_checkout(tmp_path):
    # Offline: the sources alone, built with this environment's setuptools, into a venv that
    # sees this environment's Keras; run from elsewhere so that the checkout is not imported.
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(REPO_ROOT / name, source)
    shutil.copytree(REPO_ROOT / "keras_bssn", source / "keras_bssn",
                    ignore=shutil.ignore_patterns("__pycache__"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", "--system-site-packages",
                    str(venv)], check=True)
    python = str(venv / "bin" / "python")
    install = subprocess.run(
        [sys.executable, "-m", "pip", "--python", python, "install", "--quiet", "--no-deps",
         "--no-build-isolation", "--no-index", str(source)],
        capture_output=True, text=True, cwd=tmp_path)
    assert install.returncode == 0, install.stderr

    script = ("import importlib.metadata, json, keras_bssn; print(keras_bssn.__file__); "
              "print(json.dumps(importlib.metadata.requires('keras-bssn')))")
    result = subprocess.run([python, "-c", script], capture_output=True, text=True,
                            cwd=tmp_path, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert result.returncode == 0, result.stderr
    module_file, requires = result.stdout.splitlines()[-2:]
    assert pathlib.Path(module_file).is_relative_to(venv)
    library = {str(req) for req in map(Requirement, json.loads(requires)) if req.marker is None}
    assert library == {str(Requirement(line)) for line in PROJECT["dependencies"]}
