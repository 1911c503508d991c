"""Tiny training-run directories for the export and serving tests (this file holds no tests).

Each builder writes what a trainer leaves behind and export reads: ``RUN/run.json`` (the typed
run record) and ``RUN/encoder.keras`` saved with ``model.save``. The models are small
but real: Dense/conv layers ending in the ``BiHalf`` hash layer, preprocessing inside the model.
"""

from __future__ import annotations

import io
import os

import keras
import numpy as np
from PIL import Image

from tf_bihalf.layers import BiHalf
from tf_bihalf.training.record import InputSpec, RunRecord

AUTOENCODER_BITS = 12
IMAGE_BITS = 16
IMAGE_SIZE = (24, 20)


def run_record(config: dict) -> RunRecord:
    """The run record a trainer would write for a model described by ``config``."""
    image = config["model_type"] == "image"
    return RunRecord(
        task=config["model_type"],
        config_name="test",
        dataset=config.get("dataset", "generated"),
        protocol=None,
        seed=0,
        bits=config["bits"],
        hash_layer=config["hash_layer"],
        hash_layer_kwargs={},
        input=InputSpec(
            kind="image" if image else "vector",
            shape=tuple(config["input_shape"]),
            range=(0.0, 255.0) if image else (0.0, 1.0),
        ),
        preprocessing={"image_size": config["image_size"], "resize": "stretch"} if image else {},
        backbone=config.get("backbone"),
    )


def write_run(directory: str, model: keras.Model, config: dict) -> str:
    """Saves ``model`` as ``directory/encoder.keras`` and its record as ``run.json``."""
    os.makedirs(directory, exist_ok=True)
    model.save(os.path.join(directory, "encoder.keras"))
    run_record(config).write(directory)
    return directory


def autoencoder_encoder(bits: int = AUTOENCODER_BITS, seed: int = 0) -> keras.Model:
    """784 -> 32 (ReLU) -> bits -> BiHalf, like the MNIST autoencoder's encoder."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((784,), name="pixels")
    hidden = keras.layers.Dense(32, activation="relu")(inputs)
    features = keras.layers.Dense(bits, name="hash_features")(hidden)
    codes = BiHalf(gamma=1.0, name="hash")(features)
    return keras.Model(inputs, codes, name="autoencoder_encoder")


def image_encoder(bits: int = IMAGE_BITS, image_size=IMAGE_SIZE, seed: int = 1) -> keras.Model:
    """A small conv net on float RGB in [0, 255]; the [0, 1] rescaling is inside the model."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((*image_size, 3), name="images")
    x = keras.layers.Rescaling(1.0 / 127.5, offset=-1.0)(inputs)
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu")(x)
    x = keras.layers.Conv2D(16, 3, strides=2, padding="same", activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    features = keras.layers.Dense(bits, name="hash_features")(x)
    codes = BiHalf(gamma=6.0, name="hash")(features)
    return keras.Model(inputs, codes, name="image_encoder")


def train_briefly(model: keras.Model, inputs: np.ndarray, epochs: int = 4, seed: int = 0):
    """A few epochs of training so that the model looks trained rather than freshly initialised.

    Targets are balanced random-projection codes of the (centred) inputs; the Bi-half layer
    trains with its straight-through gradient and gamma term, which pull U away from 0, as in
    real training. Int8 quantisation error is judged on such a model: at random initialisation
    U piles up around 0, where any rounding flips a bit.
    """
    rng = np.random.default_rng(seed)
    flat = inputs.reshape(len(inputs), -1)
    projection = rng.normal(size=(flat.shape[1], model.output_shape[-1])).astype(np.float32)
    scores = (flat - flat.mean(axis=0)) @ projection
    targets = np.where(scores >= np.median(scores, axis=0), 1.0, -1.0).astype(np.float32)
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="mse")
    model.fit(inputs, targets, batch_size=32, epochs=epochs, shuffle=False, verbose=0)
    return model


def make_autoencoder_run(directory: str, bits: int = AUTOENCODER_BITS) -> str:
    config = {
        "bits": bits,
        "model_type": "autoencoder",
        "hash_layer": "bihalf",
        "input_shape": [784],
        "dataset": "mnist",
    }
    return write_run(directory, autoencoder_encoder(bits), config)


def make_image_run(directory: str, bits: int = IMAGE_BITS, image_size=IMAGE_SIZE) -> str:
    config = {
        "bits": bits,
        "model_type": "image",
        "hash_layer": "bihalf",
        "input_shape": [*image_size, 3],
        "image_size": list(image_size),
        "backbone": "tiny_conv",
    }
    inputs = random_images(256, size=tuple(image_size), seed=3).astype(np.float32)
    return write_run(directory, train_briefly(image_encoder(bits, image_size), inputs), config)


def random_images(count: int, size=(31, 27), seed: int = 0) -> np.ndarray:
    """uint8 RGB images (count, H, W, 3): smooth gradients plus noise, so codes vary."""
    rng = np.random.default_rng(seed)
    height, width = size
    rows = np.linspace(0, 1, height)[:, None, None]
    cols = np.linspace(0, 1, width)[None, :, None]
    images = []
    for _ in range(count):
        slope = rng.uniform(-255, 255, size=(2, 1, 1, 3))
        base = rng.uniform(0, 255, size=(1, 1, 3))
        image = base + slope[0] * rows + slope[1] * cols + rng.normal(0, 25, (height, width, 3))
        images.append(np.clip(image, 0, 255).astype(np.uint8))
    return np.stack(images)


def encode_image(image: np.ndarray, image_format: str = "PNG") -> bytes:
    """Encodes a uint8 (H, W, 3) or (H, W) array as PNG/JPEG/BMP/GIF bytes with Pillow."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format=image_format)
    return buffer.getvalue()
