"""The registered names of the training system's Keras classes: new ones saved, old ones loaded."""

import zipfile

import keras
import numpy as np

from training.gan import GAN
from training.networks.resnet import GlobalSumPooling2D
from training.serialization import LEGACY_PACKAGE, PACKAGE


def _gan() -> GAN:
    latents = keras.Input((4,))
    generator = keras.Model(
        latents, keras.layers.Reshape((4, 4, 3))(keras.layers.Dense(48, activation="tanh")(
            latents)))
    images = keras.Input((4, 4, 3))
    features = GlobalSumPooling2D(name="sum_pool")(keras.layers.Conv2D(2, 3)(images))
    discriminator = keras.Model(images, keras.layers.Dense(1)(features))
    return GAN(generator, discriminator, seed=3)


def test_classes_are_saved_under_a_distinctive_package():
    assert PACKAGE == "keras_bssn_training"
    assert keras.saving.get_registered_name(GAN) == "keras_bssn_training>GAN"
    assert (keras.saving.get_registered_name(GlobalSumPooling2D)
            == "keras_bssn_training>GlobalSumPooling2D")


def test_a_config_with_the_old_registered_name_deserializes():
    config = keras.saving.serialize_keras_object(GlobalSumPooling2D(name="pool"))
    assert config["registered_name"] == "keras_bssn_training>GlobalSumPooling2D"
    config["registered_name"] = f"{LEGACY_PACKAGE}>GlobalSumPooling2D"

    layer = keras.saving.deserialize_keras_object(config)

    assert type(layer) is GlobalSumPooling2D and layer.name == "pool"


def test_a_gan_saved_under_the_old_names_still_loads(tmp_path):
    gan = _gan()
    gan.save(tmp_path / "gan.keras")
    # The same file as keras-bssn 0.1.0 wrote it: its classes registered under "training".
    old_file = tmp_path / "old.keras"
    with zipfile.ZipFile(tmp_path / "gan.keras") as new, zipfile.ZipFile(old_file, "w") as old:
        for item in new.infolist():
            data = new.read(item.filename)
            if item.filename == "config.json":
                text = data.decode()
                assert text.count('"keras_bssn_training>') == 2  # GAN, GlobalSumPooling2D
                data = text.replace('"keras_bssn_training>', '"training>').encode()
            old.writestr(item, data)

    loaded = keras.saving.load_model(old_file, compile=False)

    assert type(loaded) is GAN
    assert type(loaded.discriminator.get_layer("sum_pool")) is GlobalSumPooling2D
    for original, restored in zip(gan.weights, loaded.weights):
        np.testing.assert_array_equal(np.array(original), np.array(restored))
