"""The hashing autoencoder of the paper's MNIST experiment (Fig. 3; docs/paper.md, "Settings").

::

    x (784) -> Dense 256, ReLU -> Dense K  = U (continuous)
            -> hash layer (Bi-half / sign / ...)  = B (±1 in training and at inference)
            -> Dense 256, ReLU -> Dense 784, sigmoid  = reconstruction of x

The decoder is fed the BINARY codes B, never U, so the reconstruction loss trains the encoder
only through the hash layer's gradient. Dense layers are initialised as PyTorch's ``nn.Linear``:
weight and bias ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)).

Sub-models (attributes sharing the layers and weights of the autoencoder):

- ``model.encoder``: raw input (N, input_dim) -> ±1 codes (float32); call it with
  ``training=False`` (or use ``encode``) to get ``sign(U)``. This is what a run saves as
  ``RUN/encoder.keras``.
- ``model.continuous_encoder``: raw input -> U, the hash layer's input (used by
  ``tf_bihalf.callbacks.BitMonitor``).

Example:

>>> model = HashingAutoencoder(bits=16)
>>> codes = model.encode(np.zeros((3, 784), "float32"))
>>> codes.shape, codes.dtype
((3, 16), dtype('int8'))
"""

from __future__ import annotations

import keras
import numpy as np

from tf_bihalf import layers as hash_layers
from tf_bihalf.models.empty_batch import EmptyBatchSupport
from tf_bihalf.models.inputs import finite_features
from tf_bihalf.models.linear import torch_linear

HASH_LAYER_NAME = "hash_layer"


def _dense(units: int, fan_in: int, activation, name: str) -> keras.layers.Dense:
    return torch_linear(units, fan_in, activation=activation, name=name)


@keras.saving.register_keras_serializable(package="tf_bihalf")
class HashingAutoencoder(EmptyBatchSupport, keras.Model):
    """Fully connected autoencoder with a hash layer between encoder and decoder.

    Args:
        bits: code length K (>= 1).
        hash_layer: name for ``tf_bihalf.layers.get`` (``bihalf``, ``sign``, ``signreg``,
            ``tanh``, ``relaxed``, ``median``).
        hidden: width of the hidden layer of encoder and decoder (256 in the paper).
        input_dim: number of input pixels (784 for 28x28 images).
        hash_layer_kwargs: constructor arguments of the hash layer, e.g. ``{"gamma": 1.0}``.
        **kwargs: passed to ``keras.Model`` (``name``, ...).

    Call arguments:
        inputs: float32 (batch, input_dim) pixels in [0, 1].
        training: bool; selects the hash layer's training behaviour.

    Returns:
        float32 (batch, input_dim) reconstruction probabilities; an empty batch gives
        ``(0, input_dim)`` (``tf_bihalf.models.empty_batch``).

    Example:

    >>> model = HashingAutoencoder(bits=8, hash_layer="bihalf", hash_layer_kwargs={"gamma": 1.0})
    >>> model(np.zeros((4, 784), "float32"), training=True).shape
    TensorShape([4, 784])

    Reference:
        Li & van Gemert, "Deep Unsupervised Image Hashing by Maximizing Bit Entropy",
        AAAI 2021, section 4.1 and Fig. 3.
    """

    # Dense layers take a batch of zero rows in a graph; only a known-empty batch and
    # `predict` need EmptyBatchSupport.
    guard_graph_batches = False

    def __init__(
        self,
        bits: int = 32,
        hash_layer: str = "bihalf",
        hidden: int = 256,
        input_dim: int = 784,
        hash_layer_kwargs: dict | None = None,
        **kwargs,
    ):
        for argument, value in (("bits", bits), ("hidden", hidden), ("input_dim", input_dim)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{argument} must be a positive integer; got {value!r}.")
        if not isinstance(hash_layer, str):
            raise ValueError(f"hash_layer must be a layer name; got {hash_layer!r}.")
        hash_layer_kwargs = dict(hash_layer_kwargs or {})

        # === Layers ===
        # `tf_bihalf.layers.get(name, ...)` takes the layer name positionally, so the Keras
        # layer name is given through the class itself.
        if hash_layer.lower() not in hash_layers.LAYERS:
            hash_layers.get(hash_layer)  # raises the ValueError listing the known layers
        hash_block = hash_layers.LAYERS[hash_layer.lower()](
            name=HASH_LAYER_NAME, **hash_layer_kwargs
        )

        # === Functional model ===
        inputs = keras.Input(shape=(int(input_dim),), name="pixels")
        x = _dense(hidden, input_dim, "relu", "encoder_hidden")(inputs)
        continuous = _dense(bits, hidden, None, "encoder_projection")(x)
        codes = hash_block(continuous)
        x = _dense(hidden, bits, "relu", "decoder_hidden")(codes)
        reconstruction = _dense(input_dim, hidden, "sigmoid", "decoder_output")(x)
        super().__init__(inputs=inputs, outputs=reconstruction, **kwargs)

        # === Sub-models (share this model's layers; the tf_bihalf.training.submodels protocol) ===
        # Plain attributes built once: Keras' saving walks every attribute, so properties that
        # built a new model on each access would be rebuilt (and stored empty) on every save.
        self.encoder = keras.Model(inputs, codes, name="encoder")
        self.continuous_encoder = keras.Model(inputs, continuous, name="continuous_encoder")

        # === Config ===
        self.bits = int(bits)
        self.hash_layer = hash_layer
        self.hidden = int(hidden)
        self.input_dim = int(input_dim)
        self.hash_layer_kwargs = hash_layer_kwargs

    def encode(self, inputs, batch_size: int = 1024) -> np.ndarray:
        """``sign(U)`` codes as int8 ±1 (N, bits), computed in batches at inference;
        ``ValueError`` for a wrong shape or NaN/Inf pixels."""
        encoder = self.encoder
        inputs = np.asarray(inputs)
        if inputs.ndim != 2 or inputs.shape[1] != self.input_dim:
            raise ValueError(
                f"encode expects (N, {self.input_dim}) pixels; got shape {inputs.shape}."
            )
        inputs = finite_features(inputs, self.input_dim, "pixels")
        parts = [
            keras.ops.convert_to_numpy(encoder(inputs[start : start + batch_size], training=False))
            for start in range(0, len(inputs), batch_size)
        ] or [np.zeros((0, self.bits), np.float32)]
        return np.where(np.concatenate(parts) >= 0, 1, -1).astype(np.int8)

    def get_config(self):
        config = super().get_config()  # name, trainable, dtype
        config.update(
            {
                "bits": self.bits,
                "hash_layer": self.hash_layer,
                "hidden": self.hidden,
                "input_dim": self.input_dim,
                "hash_layer_kwargs": dict(self.hash_layer_kwargs),
            }
        )
        return config

    @classmethod
    def from_config(cls, config):
        return cls(**config)
