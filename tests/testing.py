"""A small shared test harness for tf_bihalf layers and models (after keras-hub's test_case).

``run_layer_test`` checks the Keras 3 layer contract; ``run_serialization_test`` the config and
serialization round trip; ``run_model_saving_test`` a ``.keras`` round trip in this process.
"""

from __future__ import annotations

import os
import tempfile

import keras
import numpy as np


def run_serialization_test(layer_or_model) -> None:
    """``get_config``/``from_config`` and ``serialize``/``deserialize`` round trips."""
    config = layer_or_model.get_config()
    clone = type(layer_or_model).from_config(config)
    assert clone.get_config() == config, "from_config(get_config()) changed the config"
    serialized = keras.saving.serialize_keras_object(layer_or_model)
    revived = keras.saving.deserialize_keras_object(serialized)
    assert type(revived) is type(layer_or_model)
    assert revived.get_config() == config


def run_layer_test(layer_cls, init_kwargs: dict, input_shape: tuple, seed: int = 0) -> None:
    """Builds ``layer_cls(**init_kwargs)``, calls it in training and inference mode and checks
    the output's shape and dtype, that inference is ``sign``, and the serialization round trip."""
    rng = np.random.default_rng(seed)
    inputs = rng.normal(size=input_shape).astype("float32")
    layer = layer_cls(**init_kwargs)
    for name, value in init_kwargs.items():
        assert getattr(layer, name) == value, f"attribute {name} does not mirror its argument"
    train_out = np.asarray(layer(inputs, training=True))
    infer_out = np.asarray(layer(inputs, training=False))
    assert train_out.shape == input_shape and infer_out.shape == input_shape
    assert train_out.dtype == np.float32 and infer_out.dtype == np.float32
    run_serialization_test(layer)


def run_model_saving_test(model: keras.Model, inputs, atol: float = 0.0) -> keras.Model:
    """Saves ``model`` as ``.keras``, reloads it and checks inference outputs are unchanged."""
    expected = keras.ops.convert_to_numpy(model(inputs, training=False))
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "model.keras")
        model.save(path)
        restored = keras.saving.load_model(path)
    actual = keras.ops.convert_to_numpy(restored(inputs, training=False))
    np.testing.assert_allclose(actual, expected, atol=atol)
    return restored
