"""How a model exposes its continuous features U and its codes B to the training tools.

The protocol (used by ``tf_bihalf.callbacks.BitMonitor`` and ``RetrievalEvaluation``, and by
trainers to save ``RUN/encoder.keras``):

1. If the model has an attribute ``continuous_encoder`` (resp. ``encoder``) that is a
   ``keras.Model``, that is used: model input -> U (the hash layer's input), resp. model input ->
   codes (the hash layer's output; ``sign(U)`` when called with ``training=False``).
2. Otherwise the model must be a functional Keras model containing exactly one
   ``tf_bihalf.layers.HashLayer``; the sub-models are cut at that layer's input and output.

Both share the model's layers and weights (no copy), so they always see the current weights.

Example:

>>> encoder = code_encoder(model)  # doctest: +SKIP
>>> codes = encoder(images, training=False)  # ±1  # doctest: +SKIP
"""

from __future__ import annotations

import keras

from tf_bihalf.layers import HashLayer


def find_hash_layer(model: keras.Model) -> HashLayer:
    """The single ``HashLayer`` of a functional model (searched recursively)."""
    found = []

    def visit(layer):
        for child in getattr(layer, "layers", []):
            if isinstance(child, HashLayer):
                found.append(child)
            else:
                visit(child)

    visit(model)
    if len(found) != 1:
        raise ValueError(
            f"Model {model.name!r} has {len(found)} tf_bihalf hash layers; exactly one is needed "
            "to cut out the encoder, or give the model `encoder` / `continuous_encoder` "
            "attributes (keras.Model: input -> codes / input -> U)."
        )
    return found[0]


def _cut(model: keras.Model, output_of: str) -> keras.Model:
    layer = find_hash_layer(model)
    try:
        tensor = layer.output if output_of == "codes" else layer.input
    except (AttributeError, ValueError) as error:
        raise ValueError(
            f"Cannot cut model {model.name!r} at its hash layer ({error}); it must be a "
            "functional model, or provide `encoder` / `continuous_encoder` attributes."
        ) from None
    inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
    return keras.Model(inputs, tensor, name=f"{model.name}_{output_of}")


def continuous_encoder(model: keras.Model) -> keras.Model:
    """Model input -> U (the continuous input of the hash layer)."""
    candidate = getattr(model, "continuous_encoder", None)
    if isinstance(candidate, keras.Model):
        return candidate
    return _cut(model, "continuous")


def code_encoder(model: keras.Model) -> keras.Model:
    """Model input -> codes (``sign(U)`` with ``training=False``)."""
    candidate = getattr(model, "encoder", None)
    if isinstance(candidate, keras.Model):
        return candidate
    return _cut(model, "codes")
