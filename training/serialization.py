"""Registering the training system's Keras classes for `.keras` saving and loading.

Keras finds a custom class in a saved `.keras` file by its registered name,
`"<package>><ClassName>"`. Our classes were first registered under the package "training",
a name generic enough to collide with another library's classes in the same global Keras
registry; they are now registered under "keras_bssn_training", and also under their old
names so that files saved before the change still load.
"""

from __future__ import annotations

from typing import TypeVar

import keras

PACKAGE = "keras_bssn_training"
# The package of files saved before keras-bssn 0.2.0.
LEGACY_PACKAGE = "training"

_Class = TypeVar("_Class", bound=type)


def register_serializable(cls: _Class) -> _Class:
    """Registers `cls` as `keras_bssn_training>Name` (saved so), and `training>Name` (loaded).

    Use as a class decorator, like `keras.saving.register_keras_serializable`.
    """
    keras.saving.register_keras_serializable(package=PACKAGE)(cls)
    # Only a lookup alias: saving writes the name above, which Keras keeps per class.
    keras.saving.get_custom_objects()[f"{LEGACY_PACKAGE}>{cls.__name__}"] = cls
    return cls
